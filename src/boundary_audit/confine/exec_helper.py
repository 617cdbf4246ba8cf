"""Entry point of the exec helper: ``python -I -S exec_helper.py ARGS -- COMMAND``.

Run by path in the child (see :mod:`.helper`). Under ``-S`` the package
``boundary_audit.confine`` cannot be imported the ordinary way: its
``__init__`` pulls in the parent side (cryptography, prometheus), which lives
in the site-packages that ``-S`` leaves out. So the standard-library-only
siblings are loaded as a package of their own, named :data:`PACKAGE`, whose
path is this directory and whose ``__init__`` never runs; nothing else
becomes importable, so a sibling that reached beyond the standard library
would fail here loudly rather than slow every launch.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

#: Name the sibling modules are loaded under in the helper process.
PACKAGE = "boundary_audit_exec_helper"


def load_helper() -> types.ModuleType:
    """The :mod:`.helper` module, loaded from this directory without the package."""
    package = types.ModuleType(PACKAGE)
    package.__path__ = [os.path.dirname(os.path.abspath(__file__))]
    sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.helper")


if __name__ == "__main__":
    load_helper().main(sys.argv[1:])
