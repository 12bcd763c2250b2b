"""Where drills imported the assertion helpers from before the package had folders: the same
names, now defined in :mod:`pytest_pgrestore.checks.assertions` and exported by the package."""

from .checks.assertions import *  # noqa: F403
from .checks.assertions import __all__  # noqa: F401
