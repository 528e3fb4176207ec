"""Registry of per-format extractors.

Built-in formats and third-party ones are found the same way, through the setuptools entry
point group ``metaextract.extractors``; each entry point names an :class:`Extractor`. A new
format is one module and one line of ``setup.py``::

    entry_points={"metaextract.extractors": ["zarr = my_pkg.zarr:EXTRACTOR"]}
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import entry_points

from transforms.formats.base import Extraction, Extractor, FileInfo, Source

__all__ = ["Extraction", "Extractor", "FileInfo", "Source", "registry", "BUILTIN"]

ENTRY_POINT_GROUP = "metaextract.extractors"

#: Built-in extractors, used as well when the package is run from a checkout without being
#: installed (no entry-point metadata).
BUILTIN = {
    "dicom": "transforms.formats.dicom:EXTRACTOR",
    "fits": "transforms.formats.fits:EXTRACTOR",
    "hdf5": "transforms.formats.hdf5:EXTRACTOR",
    "netcdf": "transforms.formats.netcdf:EXTRACTOR",
}

_log = logging.getLogger(__name__)


def _load(spec: str) -> Extractor:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def registry() -> dict[str, Extractor]:
    """Format name -> Extractor, built-ins first, then entry points (which may override)."""
    found = {name: _load(spec) for name, spec in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value == BUILTIN.get(ep.name):
            continue
        try:
            extractor = ep.load()
        except Exception as exc:  # a broken plug-in must not take the built-ins down
            _log.warning("cannot load extractor %r (%s): %s", ep.name, ep.value, exc)
            continue
        if not isinstance(extractor, Extractor):
            _log.warning("entry point %r is not a metaextract Extractor; ignored", ep.name)
            continue
        found[extractor.format] = extractor
    return found
