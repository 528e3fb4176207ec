"""The ``metaextract`` command's entry point.

Importing the pipeline (Beam, pyarrow, the format libraries) takes about half a second; a
Ctrl-C meanwhile ends the command with the same one line and exit code 130 as during a run,
not with Python's traceback of the import. Everything else is :func:`pipelines.catalog.cli`.
"""

from __future__ import annotations

import os
import sys


def cli() -> None:
    try:
        from pipelines.catalog import cli as run
        from pipelines.catalog import interrupted
    except KeyboardInterrupt:
        print("metaextract: interrupted", file=sys.stderr, flush=True)
        os._exit(130)
    try:
        run()
    except KeyboardInterrupt:  # between the import and the run's own handling
        os._exit(interrupted())
