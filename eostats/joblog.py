"""Logging for workflow jobs: everything into the job's log file, and a failure as one readable line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _DropKnownGdalNoise(logging.Filter):
    """odc-geo hands its own ``always_yx`` keyword on to GDAL's warp options, which warns on every block."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ALWAYS_YX" not in record.getMessage()


@contextmanager
def job_logging(log_path: str | Path | None, name: str) -> Iterator[logging.Logger]:
    """Send the ``eostats`` loggers (and warnings) to ``log_path`` (stderr without one); log an exception, re-raise it."""
    # a job with a log file keeps the console quiet: Snakemake shows the log of a failed job (show-failed-logs)
    handlers: list[logging.Handler] = []
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    logging.getLogger("rasterio._env").addFilter(_DropKnownGdalNoise())
    logger = logging.getLogger(f"eostats.{name}")
    try:
        yield logger
    except Exception as err:
        logger.error("%s failed: %s", name, err, exc_info=True)
        raise
