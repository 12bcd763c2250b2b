"""``python -m pytest_pgrestore.cli``."""

import sys

from ._main import main

sys.exit(main())
