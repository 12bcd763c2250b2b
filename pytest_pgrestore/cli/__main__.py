"""``python -m pytest_pgrestore.cli``."""

import sys

from .main import main

sys.exit(main())
