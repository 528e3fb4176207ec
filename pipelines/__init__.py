"""metaextract pipelines: options, wiring and the command line."""

import logging

from pipelines._version import __version__

__all__ = ["__version__"]


def _drop_beam_import_noise(record: logging.LogRecord) -> bool:
    # apache_beam logs this on import when the optional GCP client libraries are absent.
    return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_drop_beam_import_noise)
