"""Fixtures shared across the test tiers (real servers start only when a test asks for them)."""

pytest_plugins = [
    "tests.servers.postgres",
    "tests.servers.mariadb",
    "tests.integration._bank",
]
