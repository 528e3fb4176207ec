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
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points

from typing import TYPE_CHECKING

from transforms.formats.base import Extraction, Extractor, FileInfo, SchemaTables, Source

if TYPE_CHECKING:
    import pyarrow as pa

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

#: The tables of the built-in formats, known without importing their libraries (the Beam
#: process needs the schemas; only the extraction process reads files).
BUILTIN_TABLES = {
    "dicom": SchemaTables(dicom="DICOM"),
    "fits": SchemaTables(fits="FITS"),
    "hdf5": SchemaTables(hdf5="HDF5"),
    "netcdf": SchemaTables(netcdf="NETCDF"),
}

#: Usual file name endings of the built-in formats. Never used to decide a file's format (that
#: is read from its first bytes); only to load, ahead of time, the libraries a run will likely
#: need (:func:`likely_formats`).
USUAL_SUFFIXES = {
    ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
    ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fz": "fits",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5", ".nxs": "hdf5",
    ".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".netcdf": "netcdf",
}

_log = logging.getLogger(__name__)


def likely_formats(paths: Iterable[str]) -> list[str]:
    """The built-in formats whose usual suffixes occur among ``paths`` (a loading hint only)."""
    found = set()
    for path in paths:
        dot = path.rfind(".")
        if dot > path.rfind("/"):
            fmt = USUAL_SUFFIXES.get(path[dot:].lower())
            if fmt is not None:
                found.add(fmt)
                if len(found) == len(BUILTIN):
                    break
    return [name for name in BUILTIN if name in found]


def _load(spec: str) -> Extractor:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Mapping[str, Extractor]):
    """Format name -> Extractor. A built-in format's module (and its library: pydicom, astropy,
    h5py, netCDF4) is imported when the format is first asked for, so a process that never reads
    a DICOM file never loads pydicom; plug-ins are loaded at once (a broken one is reported when
    the registry is built)."""

    def __init__(self) -> None:
        self._pending = dict(BUILTIN)
        self._loaded: dict[str, Extractor] = {}
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
            self._pending.pop(extractor.format, None)  # a plug-in may replace a built-in
            self._loaded[extractor.format] = extractor
        self._names = [*BUILTIN, *(n for n in self._loaded if n not in BUILTIN)]

    def __getitem__(self, name: str) -> Extractor:
        extractor = self._loaded.get(name)
        if extractor is None:
            spec = self._pending.pop(name, None)
            if spec is None:
                raise KeyError(name)
            extractor = self._loaded[name] = _load(spec)
        return extractor

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def tables(self) -> dict[str, pa.Schema]:
        """Every format's tables, in registry order, without loading a built-in format."""
        out: dict[str, pa.Schema] = {}
        for name in self._names:
            out.update(dict(BUILTIN_TABLES[name] if name in self._pending else self[name].tables))
        return out

    def sniffers(self) -> list[tuple[str, Extractor]]:
        """The loaded formats that claim files by their first bytes (plug-ins)."""
        return [(name, e) for name, e in self._loaded.items() if e.sniff is not None]


@functools.cache
def registry() -> Registry:
    """The formats: built-ins first, then entry points (which may override a built-in)."""
    return Registry()
