"""Make the saesteer package importable from a job script.

Snakemake puts this directory on sys.path of every script; the package lives in
<repo>/src. Where it is installed (the project's venv) this changes nothing; in a conda
environment made by `--sdm conda` (which blocks PYTHONPATH) it is how the package is found.
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
