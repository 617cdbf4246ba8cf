"""``python -m boundary_audit.cli``: the same as ``python -m boundary_audit``."""

import sys

from . import main

sys.exit(main())
