"""Attacks on the platform: one test per protection (docs/security.md lists them).

Each test here is an attack that failed against the code before the
protection existed; it asserts the attack is refused and nothing changed.
"""

from tests.integration.conftest import platform  # noqa: F401  (a coordinator + real runners)
from tests.runner.conftest import (  # noqa: F401  (fixtures shared with the runner tests)
    _full_sandbox,
    anyio_backend,
    sandbox,
)
