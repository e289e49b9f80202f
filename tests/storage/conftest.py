"""Make the repository root importable when pytest is run as a plain command.

pytest puts this test directory (not the repository root) on sys.path, and the
project is not installed into the venv, so "import emulator" needs this.
"""

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
