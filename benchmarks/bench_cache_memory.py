"""How much memory the incremental cache (the previous ``files`` table as a side input) takes.

    python benchmarks/bench_cache_memory.py [--rows 1000000] [--workdir DIR] [--pipeline] [--keep]

Writes a synthetic previous catalog (``files`` table only, the FILES schema, paths of about 80
characters, 100,000 rows per Parquet file) and measures, each in a fresh process:

* **dict**: peak RSS of building the cache the way the pipeline's side input holds it
  (``cache_entries`` over every Parquet file of the table, into one ``dict``), against the RSS
  of the same process before it (imports only);
* **pipeline** (``--pipeline``): peak RSS of a whole ``metaextract`` run over a one-file input
  with that catalog as ``--previous`` (every cached path is reported deleted), against the
  same run with no previous catalog.

Prints a Markdown table and writes ``benchmarks/results/cache_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
RESULTS = os.path.join(HERE, "results", "cache_memory.json")
PER_FILE = 100_000

MEASURE_DICT = r"""
import json, resource, sys, time
from itertools import chain
from transforms.incremental import cache_entries, table_files
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
before = rss_mb()
start = time.perf_counter()
cache = dict(chain.from_iterable(cache_entries(p) for p in table_files(sys.argv[1], "files")))
elapsed = time.perf_counter() - start
print(json.dumps({"entries": len(cache), "rss_before_mb": before, "rss_after_mb": rss_mb(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "build_s": elapsed}))
"""


def write_catalog(folder: str, rows: int) -> None:
    """A previous catalog with a synthetic ``files`` table of ``rows`` rows."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms import schemas

    os.makedirs(os.path.join(folder, "files"), exist_ok=True)
    kinds = [("dicom", "dcm"), ("fits", "fits"), ("hdf5", "h5"), ("netcdf", "nc")]
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    names = []
    for start in range(0, rows, PER_FILE):
        n = min(PER_FILE, rows - start)
        idx = range(start, start + n)
        fmt = [kinds[i % 4][0] for i in idx]
        # gs://bucket/project/site/yyyy/mm/dd/instrument_run/file: about 80 characters
        path = [
            f"gs://imaging-archive-prod/{kinds[i % 4][0]}/site-{i % 37:02d}/2024/{1 + i % 12:02d}/"
            f"{1 + i % 28:02d}/run_{i // 1000:05d}/scan_{i:09d}.{kinds[i % 4][1]}"
            for i in idx
        ]
        modified = [base + dt.timedelta(seconds=i) for i in idx]
        cols = {
            "path": path,
            "format": fmt,
            "format_version": ["1"] * n,
            "size_bytes": [10_000 + i % 50_000 for i in idx],
            "modified": modified,
            "status": ["ok" if i % 50 else "error" for i in idx],
            "error": [None if i % 50 else "ValueError: truncated file" for i in idx],
            "metadata": ['{"summary": "synthetic"}'] * n,
            "extracted_at": [base + dt.timedelta(days=30)] * n,
            "extractor_version": ["0.2.0"] * n,
            "first_seen": modified,
            "change": ["new"] * n,
            "etag": [f"{i:016x}" for i in idx],
            "settings": ['{"checksum": "blake3"}'] * n,
        }
        # the columns later issues added (checksum, bytes read, ...) are left null
        table = pa.Table.from_arrays(
            [pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in schemas.FILES],
            schema=schemas.FILES,
        )
        name = f"part-{start // PER_FILE:05d}.parquet"
        pq.write_table(table, os.path.join(folder, "files", name))
        names.append(name)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"run_id": "synthetic", "table_files": {"files": names}}, f)


def measure_dict(catalog: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE_DICT, catalog], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_pipeline(input_dir: str, output: str, previous: str | None) -> dict:
    """Peak RSS (of the ``metaextract`` process, runner included) and wall time of one run."""
    cmd = [sys.executable, "-c",
           "import resource, sys; from pipelines.catalog import main; rc = main(sys.argv[1:]); "
           "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)",
           "--input", input_dir, "--output", output, "--progress", "off"]
    if previous:
        cmd += ["--previous", previous]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    peak = float(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK")))
    return {"peak_rss_mb": peak, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--pipeline", action="store_true", help="also measure a whole pipeline run")
    parser.add_argument("--output_json", default=RESULTS)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-cache-")
    catalog = os.path.join(workdir, "previous")
    result = {"rows": args.rows, "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                             "platform": platform.platform()}}
    try:
        t0 = time.perf_counter()
        write_catalog(catalog, args.rows)
        size = sum(os.path.getsize(os.path.join(catalog, "files", n)) for n in os.listdir(os.path.join(catalog, "files")))
        print(f"synthetic catalog: {args.rows:,} rows, {size / 1e6:.0f} MB of Parquet in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        result["parquet_mb"] = round(size / 1e6, 1)
        d = measure_dict(catalog)
        d["cache_mb"] = d["peak_rss_mb"] - d["rss_before_mb"]
        d["held_mb"] = d["rss_after_mb"] - d["rss_before_mb"]
        result["dict"] = d
        if args.pipeline:
            tiny = os.path.join(workdir, "tiny")
            os.makedirs(tiny, exist_ok=True)
            shutil.copyfile(os.path.join(ROOT, "pipelines", "sample_data", "fits", "m31_sample.fits"),
                            os.path.join(tiny, "one.fits"))
            result["pipeline_without_cache"] = measure_pipeline(tiny, os.path.join(workdir, "out0"), None)
            result["pipeline_with_cache"] = measure_pipeline(tiny, os.path.join(workdir, "out1"), catalog)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    per_million = 1_000_000 / args.rows
    print(f"\nside-input cache of {args.rows:,} files rows ({result['parquet_mb']:.0f} MB Parquet), "
          f"{os.cpu_count()} cores\n")
    print("| measurement | peak RSS (MB) | of which the cache (MB) | MB per million rows | time (s) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| cache dict (`cache_entries` -> dict) | {d['peak_rss_mb']:.0f} | {d['cache_mb']:.0f} "
          f"(held after: {d['held_mb']:.0f}) | {d['cache_mb'] * per_million:.0f} | {d['build_s']:.1f} |")
    if args.pipeline:
        a, b = result["pipeline_without_cache"], result["pipeline_with_cache"]
        extra = b["peak_rss_mb"] - a["peak_rss_mb"]
        result["pipeline_cache_mb"] = extra
        print(f"| whole run, no previous catalog | {a['peak_rss_mb']:.0f} | | | {a['wall_s']:.1f} |")
        print(f"| whole run, `--previous` with the cache | {b['peak_rss_mb']:.0f} | {extra:.0f} | "
              f"{extra * per_million:.0f} | {b['wall_s']:.1f} |")
    os.makedirs(os.path.dirname(args.output_json), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.output_json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
