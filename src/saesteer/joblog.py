"""Logging for workflow jobs: everything (logging records, tqdm bars, warnings) to the rule's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_job_logging(log_path: str | Path, level: int = logging.INFO) -> None:
    """Send logging and stderr (where tqdm writes its progress) to ``log_path``.

    Snakemake does not capture a script's output into ``log:`` by itself; this does, so
    `tail -f logs/...` shows the progress bar of a running job.
    """
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
        force=True,
    )
    logging.captureWarnings(True)
