"""Safe publishing: readers of the output never see a half-written catalog.

A run writes every table into a hidden staging folder, ``OUT/.metaextract-staging-<run>/``.
Nothing under ``OUT`` is touched until every table is complete there. Then:

1. each table's shards are renamed, inside staging, to their final names
   (``part-<run>-NNNNN.parquet``) in ``<staging>/<table>.ready/``;
2. a journal, ``OUT/.metaextract-publish.json``, records the run, its staging folder and tables;
3. each table is swapped in:
   - local disk: an atomic ``renameat2(RENAME_EXCHANGE)`` of the ready folder with
     ``OUT/<table>`` (two renames where the kernel lacks it), so a reader sees the old table or
     the new one, never a mix;
   - object stores (no rename there): the new objects are copied into ``OUT/<table>/`` next to
     the old ones, and the old ones are deleted only after the new manifest is written;
4. ``manifest.json`` is replaced (atomic rename locally; a single PUT, atomic, on object
   stores). It lists each table's files (``table_files``): a reader that needs a consistent view
   of an object-store catalog while a run publishes reads that list instead of a glob;
5. old objects are deleted, then the journal and the staging folder.

A run that fails or is killed before step 2 leaves the previous catalog untouched (its staging
folder is removed by the next successful run). A run killed after step 2 left a complete staging
folder and a journal: the next run rolls the publication forward before it starts
(:func:`roll_forward`), so the catalog is never left half-published.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import json
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from transforms.listing import is_local

MANIFEST = "manifest.json"
JOURNAL = ".metaextract-publish.json"
STAGING_PREFIX = ".metaextract-staging-"
RUN_MARKER = ".metaextract-run"  # inside each published table folder: which run wrote it
PARQUET_COMPRESSION = "zstd"

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two local paths (Linux renameat2). False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _write_json(fs, path: str, document: Mapping[str, Any]) -> None:
    text = json.dumps(document, indent=2)
    if is_local(fs):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with fs.open(path, "w") as f:
            f.write(text)


def _run_of(fs, folder: str) -> str | None:
    try:
        with fs.open(posixpath.join(folder, RUN_MARKER), "r") as f:
            return f.read().strip()
    except (OSError, FileNotFoundError):
        return None


def prepare(
    fs, staging_root: str, run_id: str, shards: Iterable[Mapping[str, Any]], tables: Mapping[str, pa.Schema]
) -> dict[str, list[str]]:
    """Step 1: ``<staging>/<table>.ready/part-<run>-NNNNN.parquet`` for every table."""
    by_table: dict[str, list[str]] = {name: [] for name in tables}
    for shard in shards:
        by_table.setdefault(shard["table"], []).append(fs._strip_protocol(shard["path"]))
    names: dict[str, list[str]] = {}
    for table, schema in tables.items():
        ready = posixpath.join(staging_root, f"{table}.ready")
        fs.makedirs(ready, exist_ok=True)
        paths = sorted(by_table[table])
        names[table] = []
        if not paths:  # an empty table still has one (empty) file, so globs always match
            name = f"part-{run_id}-00000.parquet"
            with fs.open(posixpath.join(ready, name), "wb") as f:
                pq.write_table(schema.empty_table(), f, compression=PARQUET_COMPRESSION)
            names[table].append(name)
        for i, path in enumerate(paths):
            name = f"part-{run_id}-{i:05d}.parquet"
            fs.mv(path, posixpath.join(ready, name))
            names[table].append(name)
        with fs.open(posixpath.join(ready, RUN_MARKER), "w") as f:
            f.write(run_id)
    return names


def _swap_in_local(fs, root: str, staging_root: str, table: str, run_id: str) -> None:
    target = posixpath.join(root, table)
    ready = posixpath.join(staging_root, f"{table}.ready")
    if _run_of(fs, target) == run_id:
        return  # already swapped in (a roll-forward after a crash)
    if not os.path.exists(ready):
        raise FileNotFoundError(f"staged table {ready} is missing")
    if os.path.isdir(target):
        if _exchange(ready, target):
            return
        os.replace(target, posixpath.join(staging_root, f"{table}.old"))
    os.replace(ready, target)


def _copy_in_remote(fs, root: str, staging_root: str, table: str, names: list[str]) -> None:
    target = posixpath.join(root, table)
    ready = posixpath.join(staging_root, f"{table}.ready")
    for name in names:
        dest = posixpath.join(target, name)
        if not fs.exists(dest):
            fs.copy(posixpath.join(ready, name), dest)
    fs.copy(posixpath.join(ready, RUN_MARKER), posixpath.join(target, RUN_MARKER))


def _delete_old_remote(fs, root: str, table: str, keep: list[str]) -> None:
    target = posixpath.join(root, table)
    for path in fs.find(target):
        name = posixpath.basename(path)
        if name not in keep and name != RUN_MARKER:
            fs.rm(path)


def commit(fs, root: str, journal: Mapping[str, Any]) -> None:
    """Steps 3-5 from a journal; idempotent, so a crashed publication can be rolled forward."""
    staging_root = journal["staging"]
    run_id = journal["run_id"]
    local = is_local(fs)
    for table, names in journal["table_files"].items():
        if local:
            _swap_in_local(fs, root, staging_root, table, run_id)
        else:
            _copy_in_remote(fs, root, staging_root, table, names)
    _write_json(fs, posixpath.join(root, MANIFEST), journal["manifest"])
    if not local:
        for table, names in journal["table_files"].items():
            _delete_old_remote(fs, root, table, names)
    fs.rm(posixpath.join(root, JOURNAL))
    for entry in fs.ls(root, detail=False):
        if posixpath.basename(entry).startswith(STAGING_PREFIX):
            fs.rm(entry, recursive=True)


def publish_catalog(
    output: str,
    staging: str,
    run_id: str,
    shards: Iterable[Mapping[str, Any]],
    tables: Mapping[str, pa.Schema],
    manifest: dict[str, Any],
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a complete staged catalog (steps 1-5) and return the manifest written."""
    fs, root = url_to_fs(output, **dict(storage_options or {}))
    _, staging_root = url_to_fs(staging, **dict(storage_options or {}))
    names = prepare(fs, staging_root, run_id, shards, tables)
    manifest = {**manifest, "table_files": names}
    journal = {"run_id": run_id, "staging": staging_root, "table_files": names, "manifest": manifest}
    _write_json(fs, posixpath.join(root, JOURNAL), journal)
    if os.environ.get("METAEXTRACT_TEST_CRASH_DURING_PUBLISH"):  # test hook: SIGKILL-like stop
        os._exit(137)
    commit(fs, root, journal)
    return manifest


def roll_forward(output: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Finish a publication that a killed run left half done. True when there was one."""
    fs, root = url_to_fs(output, **dict(storage_options or {}))
    path = posixpath.join(root, JOURNAL)
    if not fs.exists(path):
        return False
    with fs.open(path, "r") as f:
        journal = json.load(f)
    commit(fs, root, journal)
    return True


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
