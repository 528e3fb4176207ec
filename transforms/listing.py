"""List the files behind ``--input`` values: paths, folders, globs and fsspec URLs.

The listing's own size and modification time (or etag) are used: no extra stat per file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import fsspec
from fsspec.core import url_to_fs

from transforms.formats.base import FileInfo

GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """An ``--input`` that does not exist or matches nothing."""


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def _modified(entry: Mapping[str, Any]) -> dt.datetime | None:
    """The modification time from a listing entry, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "mtime_ns"):
        value = entry.get(key)
        if value is None:
            continue
        if key == "mtime_ns":
            value = value / 1e9
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


def _etag(entry: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "generation"):
        if entry.get(key) is not None:
            return str(entry[key]).strip('"')
    return None


def _file_info(fs: fsspec.AbstractFileSystem, name: str, entry: Mapping[str, Any]) -> FileInfo:
    path = os.path.abspath(name) if _is_local(fs) else fs.unstrip_protocol(name)
    return FileInfo(
        path=path,
        size=int(entry.get("size") or 0),
        modified=_modified(entry),
        etag=_etag(entry),
    )


def _entries(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[tuple[str, dict]]:
    """(name, info) for every regular file at ``path``: a file, a folder (recursive) or a glob."""
    if GLOB_CHARS & set(path):
        matches = fs.glob(path, detail=True)
    elif fs.isdir(path):
        matches = {path: {"type": "directory"}}
    else:
        try:
            matches = {path: fs.info(path)}
        except FileNotFoundError:
            return
    for name, info in sorted(matches.items()):
        if info.get("type") == "directory":
            found = fs.find(name, detail=True, withdirs=False)
            # FIFOs, sockets and devices are listed as "other": never open them.
            yield from sorted((n, i) for n, i in found.items() if i.get("type") == "file")
        elif info.get("type") == "file":
            yield name, info


def list_input(spec: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[FileInfo]:
    """Every file behind one ``--input`` value, in a stable order."""
    fs, path = url_to_fs(spec, **dict(storage_options or {}))
    for name, info in _entries(fs, path):
        yield _file_info(fs, name, info)


def list_inputs(specs: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> dict[str, FileInfo]:
    """Every distinct file behind the inputs, by path; :class:`InputError` unless every input
    matches at least one file."""
    listed: dict[str, FileInfo] = {}
    for spec in specs:
        matched = False
        try:
            for info in list_input(spec, storage_options):
                matched = True
                listed.setdefault(info.path, info)
        except (OSError, ValueError, ImportError) as exc:
            raise InputError(f"cannot list --input {spec!r}: {exc}") from exc
        if not matched:
            raise InputError(f"--input {spec!r} does not exist or matches no file")
    return listed


@dataclasses.dataclass
class ListFiles(beam.PTransform):
    """Expand ``--input`` values into one :class:`FileInfo` per distinct file, spread over workers.

    Args:
      inputs: paths, folders (walked recursively), globs (``**`` allowed) or fsspec URLs.
      storage_options: passed to fsspec (credentials come from the environment as usual).
    """

    inputs: list[str]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__init__()
        if not self.inputs:
            raise InputError("at least one input is required")

    def expand(self, pbegin):
        storage_options = self.storage_options
        return (
            pbegin
            | "CreateInputs" >> beam.Create(list(self.inputs))
            | "ExpandInputs" >> beam.FlatMap(list_input, storage_options)
            | "KeyByPath" >> beam.Map(lambda info: (info.path, info))
            | "DeduplicateByPath" >> beam.CombinePerKey(_first)
            | "DropKeys" >> beam.Values()
        )


def _first(infos: Iterable[FileInfo]) -> FileInfo | None:
    for info in infos:
        return info
    return None
