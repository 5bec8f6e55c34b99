"""stalwart: distributed systems that keep working when machines, disks and networks fail.

The top-level package only exposes the version and the error hierarchy; every capability lives
in its own subpackage (see README.md for the tour).
"""

from stalwart.errors import StalwartError

__version__ = "0.1.0"

__all__ = ["StalwartError", "__version__"]
