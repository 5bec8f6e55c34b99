"""Simulation targets, one module per protocol, discovered automatically.

A module ``stalwart.sim.targets.<name>`` that defines a module-level ``TARGET`` (an instance of
:class:`stalwart.sim.SimTarget` with ``TARGET.name == "<name>"``) is the target ``<name>``. Modules
whose names start with an underscore are skipped. Only the target asked for is imported.
"""
