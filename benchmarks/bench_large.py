"""metaextract on one big file: checksum and statistics against ``cat`` and ``b3sum`` (issue 3).

    python benchmarks/bench_large.py [--runs 3] [--data_dir DIR] [--quick] [--keep]

Writes (once, cached in ``--data_dir``) a 4 GiB HDF5 file (one float32 dataset, 4 MiB chunks,
some NaNs, no compression) and a 2 GiB NetCDF-4 file (one float32 variable with ``_FillValue``
and some fill values, 4 MiB chunks, no compression), plus a tiny file of the same layout for
each, written chunk by chunk with bounded memory. Then, page cache warm, side by side and
alternated, median of ``--runs``, for each file:

* ``cat FILE > /dev/null``, ``b3sum FILE`` and ``b3sum --no-mmap FILE`` (one thread, ``read()``);
* ``metaextract --input FILE --output OUT`` with ``--checksum none``, ``--checksum blake3``,
  ``--checksum blake3 --stats`` and ``--checksum crc32c --stats`` (in-process DirectRunner);
* ``--checksum none --stats`` with 2 workers against 1: ``--unit_threads 2`` against ``1``, the
  threads of the extraction process that run the file's data units;
* every pipeline configuration once more on the tiny file (2 MiB, with ``--chunk_threshold_mb 1``
  so that its run has the big file's large-file branch: data units, their merge): its start-up
  cost.

Reported: wall time, GB/s net of start-up (size / (wall - wall on the tiny file)), GB/s of the
data phase (size / the manifest's ``data_units.wall_seconds``: from the start of the first call
that ran the file's data units to the end of the last; the verdicts use it, as the start-up's
own jitter, about +-0.5 s on this machine, is as large as the data phase), peak RSS of
the whole process tree, ``bytes_read``/``read_requests`` from the run's manifest, and checks:
``files.checksum`` equals ``b3sum``, the ``stat_*`` columns equal the generator's own
statistics. Prints a Markdown table with the targets of issue 3 and PASS/FAIL, and writes every
sample to ``benchmarks/results/large.json``. The big files are deleted at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_speed as speed

GIB = 1 << 30
MIB = 1 << 20
GB = 1e9  # GB/s are decimal, like the figures
DEFAULT_DATA_DIR = os.path.join(HERE, "_corpus", "large")
GENERATOR_VERSION = 1
SIDE = 1024  # a slice is SIDE x SIDE float32 = one 4 MiB chunk
TINY_SIDE = 512  # the tiny file: two 1 MiB slices, above --chunk_threshold_mb 1 (TINY_FLAGS)
#: The tiny file's runs take the large-file branch too (data units), as the big file's do.
TINY_FLAGS = ["--chunk_threshold_mb", "1"]
NANS_PER_SLICE = 64
NC_FILL = np.float32(-9999.0)
SIZES = {"full": {"hdf5": 4 * GIB, "netcdf": 2 * GIB}, "quick": {"hdf5": 256 * MIB, "netcdf": 128 * MIB}}
VARIABLE = {"hdf5": "data", "netcdf": "temperature"}
HEADER_ONLY_LIMIT = 2 * MIB

#: The targets of issue 3, "Proof".
TARGETS = {
    "gbps_hdf5": ("--checksum blake3 --stats on the HDF5 file, GB/s of the data phase (also net of start-up)", ">=", 2.5),
    "gbps_netcdf": ("--checksum blake3 --stats on the NetCDF file, GB/s of the data phase (also net of start-up)", ">=", 2.0),
    "peak_rss_mb": ("peak RSS of the whole process tree, every in-process run (MB)", "<", 250.0),
    "header_only_bytes": ("--checksum none reads headers only (bytes_read)", "<", float(HEADER_ONLY_LIMIT)),
    "workers_speedup": ("--stats, 2 workers / 1 worker, data phase (also net of start-up)", ">=", 1.6),
}


def passes(target: str, value: float | None) -> bool | None:
    if value is None:
        return None
    _, op, limit = TARGETS[target]
    return {">=": value >= limit, "<": value < limit}[op]


def all_pass(values: Sequence[bool | None]) -> bool | None:
    known = [v for v in values if v is not None]
    return all(known) if known else None


log = speed.log
verdict = speed.verdict
summarize = speed.summarize


# --- the files ---------------------------------------------------------------------------


class Moments:
    """Count, missing count, min, max, mean and M2 of float32 blocks, merged exactly (Chan)."""

    def __init__(self) -> None:
        self.count = self.missing = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, block: np.ndarray, missing: np.ndarray) -> None:
        values = block[~missing].astype(np.float64)
        self.missing += int(missing.sum())
        if not values.size:
            return
        n, mean = values.size, float(values.mean())
        m2 = float(np.square(values - mean).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def as_dict(self) -> dict[str, float | int]:
        return {
            "stat_count": self.count,
            "stat_nan_count": self.missing,
            "stat_min": self.min,
            "stat_max": self.max,
            "stat_mean": self.mean,
            "stat_std": math.sqrt(self.m2 / self.count) if self.count else math.nan,
        }


def _slices(rng: np.random.Generator, n_slices: int, side: int, missing_value: float) -> Any:
    """One ``side`` x ``side`` float32 slice at a time, with ``NANS_PER_SLICE`` missing values."""
    for _ in range(n_slices):
        block = rng.normal(280.0, 15.0, size=(side, side)).astype(np.float32)
        block.flat[rng.integers(0, side * side, size=NANS_PER_SLICE)] = missing_value
        yield block


def write_hdf5(path: str, n_slices: int, side: int, seed: int) -> Moments:
    import h5py

    moments = Moments()
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(VARIABLE["hdf5"], shape=(n_slices, side, side), dtype="f4", chunks=(1, side, side))
        dset.attrs["units"] = "K"
        dset.attrs["long_name"] = "synthetic temperature, NaN where missing"
        for i, block in enumerate(_slices(np.random.default_rng(seed), n_slices, side, np.nan)):
            dset[i] = block
            moments.add(block, np.isnan(block))
    return moments


def write_netcdf(path: str, n_slices: int, side: int, seed: int) -> Moments:
    import netCDF4

    moments = Moments()
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        for name, size in (("time", n_slices), ("y", side), ("x", side)):
            ds.createDimension(name, size)
        var = ds.createVariable(
            VARIABLE["netcdf"], "f4", ("time", "y", "x"), zlib=False, chunksizes=(1, side, side), fill_value=NC_FILL
        )
        var.units = "K"
        var.set_auto_mask(False)
        for i, block in enumerate(_slices(np.random.default_rng(seed), n_slices, side, NC_FILL)):
            var[i] = block
            moments.add(block, block == NC_FILL)
    return moments


WRITERS = {"hdf5": (write_hdf5, ".h5"), "netcdf": (write_netcdf, ".nc")}


def ensure_file(data_dir: str, fmt: str, size: int, tiny: bool = False) -> dict[str, Any]:
    """Write (or reuse) the file of ``fmt`` and ``size`` bytes of data; its description."""
    writer, ext = WRITERS[fmt]
    side = TINY_SIDE if tiny else SIDE
    n_slices = 2 if tiny else size // (4 * side * side)
    name = f"{fmt}-tiny{ext}" if tiny else f"{fmt}-{size // MIB}MiB{ext}"
    path = os.path.join(data_dir, name)
    meta_path = path + ".json"
    params = {"version": GENERATOR_VERSION, "format": fmt, "n_slices": n_slices, "side": side}
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("params") == params and meta.get("size_bytes") == os.path.getsize(path):
            return meta
    os.makedirs(data_dir, exist_ok=True)
    start = time.perf_counter()
    tmp = path + ".part"
    moments = writer(tmp, n_slices, side, seed=[GENERATOR_VERSION, list(WRITERS).index(fmt), n_slices])
    os.replace(tmp, path)
    b3 = subprocess.run(["b3sum", "--no-names", path], check=True, capture_output=True, text=True).stdout.strip()
    meta = {
        "path": path,
        "params": params,
        "size_bytes": os.path.getsize(path),
        "shape": [n_slices, side, side],
        "variable": VARIABLE[fmt],
        "expected_stats": moments.as_dict(),
        "b3sum": b3,
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    log(f"wrote {path}: {meta['size_bytes'] / GIB:.2f} GiB in {time.perf_counter() - start:.1f} s")
    return meta


def remove_file(meta: dict[str, Any]) -> None:
    for path in (meta["path"], meta["path"] + ".json"):
        if os.path.exists(path):
            os.remove(path)


def warm(path: str) -> None:
    """``cat FILE > /dev/null``: the next run reads from the page cache."""
    subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)


# --- running and measuring -----------------------------------------------------------------


class TreeMemory:
    """Samples the RSS and PSS of ``root``'s descendants (not ``root`` itself), each summed.

    RSS counts pages shared between processes (libraries, a fork server's copy-on-write pages)
    once per process; PSS splits them between the processes sharing them. Sampling must not
    take the cores the measured run needs: RSS is cheap (``/proc/PID/statm``, 0.03 ms), but PSS
    walks every mapping (``smaps``, about 3 ms per process) and listing the tree scans ``/proc``
    (about 2 ms). Sampling all three every 20 ms kept half a core busy here and made
    ``--checksum blake3 --stats`` on the 4 GiB file take 2.1-2.8 s instead of 1.4-1.6 s. So
    the tree is listed every ``list_every_s`` and PSS taken every ``pss_every_s``; RSS at every
    sample.
    """

    def __init__(self, root: psutil.Process, *, list_every_s: float = 0.25, pss_every_s: float = 0.5) -> None:
        self._root = root
        self._list_every_s, self._pss_every_s = list_every_s, pss_every_s
        self._family: list[psutil.Process] = []
        self._listed = self._pss_taken = -math.inf
        self.peak_rss = self.peak_pss = 0

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._listed >= self._list_every_s:
            try:
                self._family = self._root.children(recursive=True)
            except psutil.Error:
                self._family = []
            self._listed = now
        take_pss = now - self._pss_taken >= self._pss_every_s
        rss = pss = 0
        for proc in self._family:
            try:
                if take_pss:
                    info = proc.memory_full_info()
                    pss += getattr(info, "pss", info.rss)
                else:
                    info = proc.memory_info()
            except psutil.Error:  # gone meanwhile
                continue
            rss += info.rss
        self.peak_rss = max(self.peak_rss, rss)
        if take_pss:
            self._pss_taken = now
            self.peak_pss = max(self.peak_pss, pss)


def run_tree(
    cmd: Sequence[str], *, poll_s: float = 0.02, timeout_s: float | None = None, discard_stdout: bool = False
) -> dict[str, Any]:
    """Run ``cmd``: wall time, CPU, exit code, output, and peak RSS of its whole process tree.

    ``cmd`` runs under ``/usr/bin/time -f %M``, whose figure is the peak RSS of the largest single
    process (exact; taken from a small parent, since on Linux a child's ``ru_maxrss`` starts at
    its parent's RSS at exec). A thread polls the RSS of every process of the tree, summed,
    every ``poll_s`` (and their PSS, which counts shared pages once, less often: see
    :class:`TreeMemory`). The peak reported is the larger of the two RSS figures. On ``timeout_s`` the process group is killed.
    ``discard_stdout``: the output goes to ``/dev/null`` (``cat FILE > /dev/null``).
    """
    with tempfile.TemporaryDirectory(prefix="run-") as tmp:
        out_path, err_path, rss_path = (os.path.join(tmp, n) for n in ("out", "err", "rss"))
        with open(os.devnull if discard_stdout else out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                ["/usr/bin/time", "-f", "%M", "-o", rss_path, *cmd],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            memory, stop = TreeMemory(psutil.Process(proc.pid)), threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    memory.sample()
                    stop.wait(poll_s)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            killer = threading.Timer(timeout_s, os.killpg, (proc.pid, signal.SIGKILL)) if timeout_s else None
            if killer:
                killer.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            stop.set()
            if killer:
                killer.cancel()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        with open(err_path, "rb") as err, open(rss_path) as rss:
            stdout = "" if discard_stdout else pathlib.Path(out_path).read_bytes().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
            largest = int((rss.read().split() or ["0"])[-1]) * 1024
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "tree_peak_rss_mb": max(memory.peak_rss, largest) / 1e6,
        "polled_tree_peak_rss_mb": memory.peak_rss / 1e6,
        "polled_tree_peak_pss_mb": memory.peak_pss / 1e6,
        "largest_process_rss_mb": largest / 1e6,
        "returncode": proc.returncode,
        "timed_out": wall >= timeout_s if timeout_s else False,
        "stdout": stdout,
        "stderr": stderr,
    }


def read_parquet_dir(folder: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")


def crc32c_of(meta: dict[str, Any]) -> str:
    """The file's crc32c (hex) by google_crc32c over 8 MiB reads, computed once per file."""
    if "crc32c" not in meta:
        import google_crc32c

        crc = 0
        with open(meta["path"], "rb") as f:
            while block := f.read(8 << 20):
                crc = google_crc32c.extend(crc, block)
        meta["crc32c"] = f"{crc:08x}"
    return meta["crc32c"]


def check_run(out_dir: str, meta: dict[str, Any], fmt: str, checksum: str, stats: bool) -> dict[str, Any]:
    """The run's read counters, and whether its ``files`` row and statistics are right."""
    found: dict[str, Any] = {"problems": []}
    problems = found["problems"]
    try:
        with open(os.path.join(out_dir, "manifest.json")) as f:
            manifest = json.load(f)
    except OSError as exc:
        problems.append(f"no manifest: {exc}")
        return found
    found["manifest_bytes_read"] = manifest.get("bytes_read")
    found["manifest_read_requests"] = manifest.get("read_requests")
    units = manifest.get("data_units") or {}
    if units.get("count"):  # the data phase: first data unit's call started -> last one ended
        found["data_wall_s"] = units["wall_seconds"]
    files = read_parquet_dir(os.path.join(out_dir, "files"))
    if files is None or files.num_rows != 1:
        problems.append(f"files table has {0 if files is None else files.num_rows} rows, expected 1")
        return found
    row = files.to_pylist()[0]
    for key in ("status", "error", "checksum", "bytes_read", "read_requests", "extract_seconds"):
        found[key] = row.get(key)
    if row["status"] != "ok":
        problems.append(f"status {row['status']}: {row.get('error')}")
    if checksum == "blake3":
        expected = f"blake3:{meta['b3sum']}"
        found["checksum_matches_b3sum"] = row.get("checksum") == expected
        if not found["checksum_matches_b3sum"]:
            problems.append(f"files.checksum {row.get('checksum')!r} != {expected!r} (b3sum)")
    elif checksum == "crc32c":
        expected = f"crc32c:{crc32c_of(meta)}"
        found["checksum_matches_crc32c"] = row.get("checksum") == expected
        if not found["checksum_matches_crc32c"]:
            problems.append(f"files.checksum {row.get('checksum')!r} != {expected!r} (google_crc32c)")
    elif row.get("checksum"):
        problems.append(f"--checksum none wrote files.checksum {row['checksum']!r}")
    if stats:
        found.update(check_stats(out_dir, meta, fmt, problems))
    return found


def check_stats(out_dir: str, meta: dict[str, Any], fmt: str, problems: list[str]) -> dict[str, Any]:
    """Compare the ``stat_*`` columns of the data variable's row with the generator's figures."""
    table = read_parquet_dir(os.path.join(out_dir, fmt))
    if table is None:
        problems.append(f"no {fmt} table")
        return {"stats_match": False}
    key = "object_path" if fmt == "hdf5" else "variable"
    wanted = f"/{meta['variable']}" if fmt == "hdf5" else meta["variable"]
    rows = [r for r in table.to_pylist() if r.get(key) == wanted]
    if len(rows) != 1:
        problems.append(f"{len(rows)} rows for {wanted} in the {fmt} table")
        return {"stats_match": False}
    expected = meta["expected_stats"]
    got = {name: rows[0].get(name, "absent") for name in expected}
    errors = {}
    for name, want in expected.items():
        value = got[name]
        if value is None or value == "absent":
            errors[name] = value
        elif name in ("stat_count", "stat_nan_count", "stat_min", "stat_max"):
            if value != want:
                errors[name] = value
        elif abs(value - want) > 1e-6 * abs(want):
            errors[name] = value
    if errors:
        problems.append(f"stat columns differ from the generator's ({expected}): {errors}")
    relative = {n: abs(got[n] - w) / abs(w) for n, w in expected.items() if isinstance(got[n], (int, float)) and w}
    return {"stats": got, "stats_match": not errors, "stats_max_relative_error": max(relative.values(), default=None)}


# --- the benchmark -------------------------------------------------------------------------

PIPELINE_CONFIGS = {
    "none": ["--checksum", "none"],
    "blake3": ["--checksum", "blake3"],
    "blake3_stats": ["--checksum", "blake3", "--stats"],
    "crc32c_stats": ["--checksum", "crc32c", "--stats"],
    "workers1": ["--checksum", "none", "--stats", "--unit_threads", "1"],
    "workers2": ["--checksum", "none", "--stats", "--unit_threads", "2"],
}
LABELS = {
    "cat": "`cat FILE > /dev/null`",
    "b3sum": "`b3sum FILE` (mmap, all cores)",
    "b3sum_read": "`b3sum --no-mmap FILE` (one thread, read())",
    "none": "metaextract `--checksum none`",
    "blake3": "metaextract `--checksum blake3`",
    "blake3_stats": "metaextract `--checksum blake3 --stats`",
    "crc32c_stats": "metaextract `--checksum crc32c --stats`",
    "workers1": "metaextract `--checksum none --stats --unit_threads 1`",
    "workers2": "metaextract `--checksum none --stats --unit_threads 2`",
}


def bench_file(fmt: str, meta: dict[str, Any], tiny: dict[str, Any], runs: int, work: str, workers: bool) -> dict[str, Any]:
    """Every measurement on one file (and its tiny twin), alternated, ``runs`` rounds."""
    path, tiny_path = meta["path"], tiny["path"]
    tools = {
        "cat": ["cat", path],
        "b3sum": ["b3sum", path],
        "b3sum_read": ["b3sum", "--no-mmap", path],
    }
    configs = [c for c in PIPELINE_CONFIGS if workers or not c.startswith("workers")]
    jobs: list[tuple[str, bool]] = [(t, False) for t in tools] + [(c, t) for c in configs for t in (False, True)]
    samples: dict[str, list[dict[str, Any]]] = {f"{name}{'_tiny' if t else ''}": [] for name, t in jobs}
    log(f"{fmt}: warm-up run (not counted)")
    run_tree(speed.metaextract_command() + ["--input", tiny_path, "--output", os.path.join(work, "warmup")])
    for r in range(runs):
        for name, on_tiny in jobs if r % 2 == 0 else jobs[::-1]:
            key = f"{name}{'_tiny' if on_tiny else ''}"
            target = tiny if on_tiny else meta
            warm(target["path"])
            if name in tools:
                result = run_tree(tools[name], discard_stdout=name == "cat")
                if name.startswith("b3sum") and result["stdout"].split()[:1] != [meta["b3sum"]]:
                    result["problems"] = [f"{name} printed {result['stdout'][:80]!r}"]
            else:
                out = os.path.join(work, f"{fmt}-{key}-{r}")
                cmd = speed.metaextract_command() + ["--input", target["path"], "--output", out] + PIPELINE_CONFIGS[name]
                cmd += TINY_FLAGS if on_tiny else []
                result = run_tree(cmd)
                checksum = PIPELINE_CONFIGS[name][1]
                result.update(check_run(out, target, fmt, checksum, "--stats" in PIPELINE_CONFIGS[name]))
                if result["returncode"] != 0:
                    result["problems"].append(f"exit {result['returncode']}: {result['stderr'].strip().splitlines()[-1:]}")
                shutil.rmtree(out, ignore_errors=True)
            result.pop("stdout")
            stderr = result.pop("stderr")
            if result.get("problems"):
                result["stderr_tail"] = stderr.strip().splitlines()[-20:]
                log(f"{fmt} {key}: PROBLEM {result['problems']}")
            samples[key].append(result)
        log(
            f"{fmt} round {r + 1}/{runs}: "
            + ", ".join(f"{k} {v[-1]['wall_s']:.2f} s" for k, v in samples.items() if not k.endswith("_tiny"))
        )
    return summarize_file(meta, samples)


def summarize_file(meta: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    size = meta["size_bytes"]
    rows: dict[str, dict[str, Any]] = {}
    for key, results in samples.items():
        if key.endswith("_tiny"):
            continue
        wall = summarize([x["wall_s"] for x in results])
        row: dict[str, Any] = {
            "wall_s": wall,
            "cpu_s": summarize([x["cpu_s"] for x in results]),
            "tree_peak_rss_mb": max(x["tree_peak_rss_mb"] for x in results),
            "tree_peak_pss_mb": max(x["polled_tree_peak_pss_mb"] for x in results),
            "largest_process_rss_mb": max(x["largest_process_rss_mb"] for x in results),
            "problems": sorted({p for x in results for p in x.get("problems", [])}),
        }
        tiny = samples.get(f"{key}_tiny")
        if tiny:
            startup = summarize([x["wall_s"] for x in tiny])
            net = wall["median"] - startup["median"]
            row["startup_wall_s"] = startup
            row["startup_tree_peak_rss_mb"] = max(x["tree_peak_rss_mb"] for x in tiny)
            row["gbps_net_of_startup"] = size / GB / net if net > 0 else None
            row["problems"] += sorted({f"tiny file: {p}" for x in tiny for p in x.get("problems", [])})
            seconds = [x["extract_seconds"] for x in results if x.get("extract_seconds")]
            row["gbps_by_extract_seconds"] = size / GB / statistics.median(seconds) if seconds and key != "none" else None
            data = [x["data_wall_s"] for x in results if x.get("data_wall_s")]
            if data and len(data) == len(results):
                row["data_wall_s"] = summarize(data)
                row["gbps_data_phase"] = size / GB / row["data_wall_s"]["median"]
            last = results[-1]
            for field in ("manifest_bytes_read", "manifest_read_requests", "bytes_read", "read_requests", "checksum",
                          "checksum_matches_b3sum", "checksum_matches_crc32c", "stats", "stats_match", "stats_max_relative_error", "extract_seconds"):  # fmt: skip
                if field in last:
                    row[field] = last[field]
        else:
            row["gbps_net_of_startup"] = size / GB / wall["median"]
        rows[key] = row
    out: dict[str, Any] = {"file": meta, "measurements": rows, "samples": samples}
    if "none" in rows:
        counted = rows["none"].get("manifest_bytes_read")
        if counted is None:
            counted = rows["none"].get("bytes_read")
        out["header_only_bytes_read"] = counted
    if "workers1" in rows and "workers2" in rows:
        w1, w2 = rows["workers1"], rows["workers2"]
        out["workers_speedup_raw"] = w1["wall_s"]["median"] / w2["wall_s"]["median"]
        net1 = w1["wall_s"]["median"] - w1["startup_wall_s"]["median"]
        net2 = w2["wall_s"]["median"] - w2["startup_wall_s"]["median"]
        out["workers_speedup_net_of_startup"] = net1 / net2 if net1 > 0 and net2 > 0 else None
        if "data_wall_s" in w1 and "data_wall_s" in w2:
            out["workers_speedup"] = w1["data_wall_s"]["median"] / w2["data_wall_s"]["median"]
    return out


# --- report --------------------------------------------------------------------------------


def fmt_s(summary: dict[str, float]) -> str:
    return f"{summary['median']:.2f} [{summary['min']:.2f}-{summary['max']:.2f}]"


def fmt_int(value: Any) -> str:
    return "" if value is None else f"{value:,}"


def report(results: dict[str, Any]) -> str:
    lines = []
    for fmt, res in results["files"].items():
        meta = res["file"]
        rows = res["measurements"]
        lines += [
            "",
            f"**{fmt.upper()}**: `{os.path.basename(meta['path'])}`, {meta['size_bytes'] / GIB:.2f} GiB "
            f"({meta['size_bytes'] / GB:.2f} GB), float32 {meta['shape']}, 4 MiB chunks; median of {results['runs']} runs.",
            "",
            "| measure | wall s, median [min-max] | start-up s (tiny file) | GB/s net of start-up | data phase s, median [min-max] "
            "| GB/s of the data phase | peak RSS of the process tree, MB (PSS; largest process) | bytes_read | read_requests | target | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, row in rows.items():
            target, result = "", ""
            if key == "none":
                target = "bytes_read < 2 MiB"
                result = verdict(passes("header_only_bytes", res.get("header_only_bytes_read")))
            elif key == "blake3_stats":
                target = f">= {TARGETS[f'gbps_{fmt}'][2]} GB/s"
                result = verdict(passes(f"gbps_{fmt}", row.get("gbps_data_phase")))
                result += f" (net of start-up: {verdict(passes(f'gbps_{fmt}', row.get('gbps_net_of_startup')))})"
            gbps, data_gbps = row.get("gbps_net_of_startup"), row.get("gbps_data_phase")
            data_wall = row.get("data_wall_s")
            startup = row.get("startup_wall_s")
            bytes_read = row.get("manifest_bytes_read", row.get("bytes_read"))
            requests = row.get("manifest_read_requests", row.get("read_requests"))
            lines.append(
                f"| {LABELS[key]} | {fmt_s(row['wall_s'])} | {fmt_s(startup) if startup else ''} | "
                f"{'' if gbps is None else f'{gbps:.2f}'} | {fmt_s(data_wall) if data_wall else ''} | "
                f"{'' if data_gbps is None else f'{data_gbps:.2f}'} | "
                f"{row['tree_peak_rss_mb']:.0f} ({row['tree_peak_pss_mb']:.0f}; {row['largest_process_rss_mb']:.0f}) | {fmt_int(bytes_read)} | "
                f"{fmt_int(requests)} | {target} | {result} |"
            )
        inproc = [rows[k]["tree_peak_rss_mb"] for k in PIPELINE_CONFIGS if k in rows]
        if inproc:
            lines.append(
                f"| peak RSS of the in-process runs (max) | | | | | | {max(inproc):.0f} | | | < 250 MB | "
                f"{verdict(passes('peak_rss_mb', max(inproc)))} |"
            )
        if res.get("workers_speedup_raw") is not None:
            speedup, net = res.get("workers_speedup"), res.get("workers_speedup_net_of_startup")
            lines.append(
                f"| `--stats`, 2 workers vs 1: wall(1)/wall(2) of the whole run {res['workers_speedup_raw']:.2f}x | | | "
                f"{'' if net is None else f'{net:.2f}x'} | | {'' if speedup is None else f'{speedup:.2f}x'} | | | | >= 1.6x | "
                f"{verdict(passes('workers_speedup', speedup))} (net of start-up: {verdict(passes('workers_speedup', net))}) |"
            )
        checks = res["correctness"]
        lines.append(f"| `files.checksum` equals `b3sum` | | | | | | | | | equal | {verdict(checks['checksum_matches_b3sum'])} |")
        if checks.get("checksum_matches_crc32c") is not None:
            lines.append(
                f"| `--checksum crc32c` equals google_crc32c | | | | | | | | | equal | {verdict(checks['checksum_matches_crc32c'])} |"
            )
        lines.append(
            f"| `stat_*` columns present and equal to the generator's (count, NaN/fill count, min, max exact; "
            f"mean, std to 1e-6) | | | | | | | | | equal | {verdict(checks['stats_match'])} |"
        )
        problems = sorted({f"{k}: {p}" for k, row in rows.items() for p in row["problems"]})
        if problems:
            lines.append("")
            lines.append("Problems seen:")
            lines += [f"- {p}" for p in problems[:20]]
    mach = results["machine"]
    others = results.get("other_processes_cores")
    lines.append("")
    if others is not None and others > 0.2:
        lines.append(
            f"**Warning: other processes kept {others:.1f} of the {mach['usable_cpus']} CPUs busy on average "
            f"while the benchmark ran: wall times are inflated.**"
        )
        lines.append("")
    lines.append(
        f"Machine: {mach['cpu_model']}, {mach['usable_cpus']} usable CPUs, {mach['ram_gb']} GB RAM, {mach['os']}, "
        f"Python {mach['python']}; load average {mach['load_average_at_start']} at start and "
        f"{results.get('load_average_at_end')} at end; other processes used {others} CPUs on average. "
        f"metaextract {mach['metaextract']} (commit {results.get('commit')}), {results['date']}."
    )
    return "\n".join(lines)


def correctness(res: dict[str, Any]) -> dict[str, bool | None]:
    samples = res["samples"]
    checksum = [x.get("checksum_matches_b3sum") for k in ("blake3", "blake3_stats") for x in samples.get(k, [])]
    crc = [x.get("checksum_matches_crc32c") for x in samples.get("crc32c_stats", [])]
    stats = [x.get("stats_match") for k in ("blake3_stats", "crc32c_stats", "workers1", "workers2") for x in samples.get(k, [])]
    return {
        "checksum_matches_b3sum": all_pass([bool(c) for c in checksum]) if checksum else None,
        "checksum_matches_crc32c": all_pass([bool(c) for c in crc]) if crc else None,
        "stats_match": all_pass([bool(s) for s in stats]) if stats else None,
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", speed.REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured rounds, alternated (default %(default)s)")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="where the files are written and cached (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="256 MiB HDF5 and 128 MiB NetCDF files instead of 4 GiB and 2 GiB")
    parser.add_argument("--formats", default="hdf5,netcdf", help="comma-separated subset of hdf5,netcdf (default %(default)s)")
    parser.add_argument("--no_workers", action="store_true", help="skip the 2-workers-against-1 measurement")
    parser.add_argument("--keep", action="store_true", help="keep the big files in --data_dir for the next run")
    parser.add_argument("--output_json", default=None, help="default benchmarks/results/large.json (--quick: DATA_DIR/large-quick.json)")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if args.runs < 1 or not formats or set(formats) - set(WRITERS):
        parser.error("--runs must be >= 1 and --formats a subset of hdf5,netcdf")
    for tool in ("cat", "b3sum"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    data_dir = os.path.abspath(args.data_dir)
    output_json = args.output_json or (
        os.path.join(data_dir, "large-quick.json") if args.quick else os.path.join(speed.RESULTS_DIR, "large.json")
    )
    sizes = SIZES["quick" if args.quick else "full"]
    total = sum(sizes[f] for f in formats)
    os.makedirs(data_dir, exist_ok=True)
    free_disk = shutil.disk_usage(data_dir).free
    if free_disk < total + GIB:
        parser.error(f"{free_disk / GIB:.1f} GiB free in {data_dir}, {total / GIB + 1:.1f} GiB needed")
    if psutil.virtual_memory().available < total + 2 * GIB:
        log("warning: less free memory than the files' size: the page cache cannot hold them, runs read the disk")

    machine = speed.machine_info()
    log(f"machine: {machine['cpu_model']}, {machine['usable_cpus']} CPUs, load {machine['load_average_at_start']}")
    metas = {f: ensure_file(data_dir, f, sizes[f]) for f in formats}
    tinies = {f: ensure_file(data_dir, f, 0, tiny=True) for f in formats}
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "quick": args.quick,
        "runs": args.runs,
        "command": speed.metaextract_command(),
        "machine": machine,
        "targets": {k: {"description": d, "op": op, "limit": lim} for k, (d, op, lim) in TARGETS.items()},
        "files": {},
    }
    busy0, own0, wall0 = speed.cpu_busy_s(), speed.own_cpu_s(), time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="metaextract-large-") as work:
            for fmt in formats:
                res = bench_file(fmt, metas[fmt], tinies[fmt], args.runs, work, not args.no_workers)
                res["correctness"] = correctness(res)
                results["files"][fmt] = res
    finally:
        if not args.keep:
            for meta in metas.values():
                remove_file(meta)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    busy1, own1, wall1 = speed.cpu_busy_s(), speed.own_cpu_s(), time.perf_counter()
    if busy0 is not None and busy1 is not None:
        results["other_processes_cores"] = round(max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0), 2)
    verdicts: dict[str, bool | None] = {}
    for fmt, res in results["files"].items():
        rows = res["measurements"]
        if "blake3_stats" in rows:
            verdicts[f"gbps_{fmt}"] = passes(f"gbps_{fmt}", rows["blake3_stats"].get("gbps_data_phase"))
            verdicts[f"gbps_{fmt}_net_of_startup"] = passes(f"gbps_{fmt}", rows["blake3_stats"].get("gbps_net_of_startup"))
        verdicts[f"header_only_bytes_{fmt}"] = passes("header_only_bytes", res.get("header_only_bytes_read"))
        inproc = [rows[k]["tree_peak_rss_mb"] for k in PIPELINE_CONFIGS if k in rows]
        verdicts[f"peak_rss_mb_{fmt}"] = passes("peak_rss_mb", max(inproc)) if inproc else None
        if "workers_speedup" in res:
            verdicts[f"workers_speedup_{fmt}"] = passes("workers_speedup", res["workers_speedup"])
            verdicts[f"workers_speedup_{fmt}_net_of_startup"] = passes("workers_speedup", res.get("workers_speedup_net_of_startup"))
        verdicts.update({f"{k}_{fmt}": v for k, v in res["correctness"].items()})
    results["verdicts"] = {k: verdict(v) for k, v in verdicts.items()}
    table = report(results)
    results["markdown"] = table
    os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
    with open(output_json, "w") as f:
        json.dump(results, f, indent=2)
    print(table)
    log(f"results written to {output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
