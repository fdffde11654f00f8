import sys
from pathlib import Path

# Tests import the project's packages (common, actors, ...) and tests/fakes.py.
ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
