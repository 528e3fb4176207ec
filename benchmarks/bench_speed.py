"""metaextract's speed benchmark: the pipeline against a plain Python loop, in one run.

    python benchmarks/bench_speed.py [--per_format 500] [--runs 5] [--corpus_dir DIR] [--keep]

Measures, side by side on the same synthetic corpus (``benchmarks/corpus.py``):

(a) whole process: wall time, files/s, CPU time and peak RSS of ``metaextract --input CORPUS
    --output OUT`` (in-process DirectRunner) and of ``benchmarks/plain_loop.py``, both as
    subprocesses, alternated, median of ``--runs``;
(b) extraction alone, in this process: ``catalog_rows(detect(info))`` against the plain loop's
    per-file function, files/s per core (files per CPU second) and per-format p50/p95 latency;
(c) two workers against one, on the corpus and on one file per format (the workers' start-up
    cost), in both local running modes: ``--direct_running_mode=multi_processing`` (worker
    processes) and ``multi_threading`` (worker threads of one process, each reading through an
    extraction process of its own);
(d) Beam's overhead per file: the pipeline (timed inside its process, imports excluded) against
    the same work without Beam (list, detect, extract, write the same Parquet tables), with
    detection and extraction memoized so that only listing, Beam and writing are left; on the
    whole corpus and on one file per format (Beam's fixed start-up cost); and once more with
    real extraction.

benchmarks/README.md explains each figure.

Prints a Markdown table with the targets of issue 2 and PASS/FAIL, and writes everything
(every sample, the machine) to ``benchmarks/results/speed.json``. ``--profile`` also runs the
pipeline once under cProfile and prints where the time goes beyond extraction.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

import corpus as corpus_mod

RESULTS_DIR = os.path.join(HERE, "results")
RESULT_MARK = "BENCH_RESULT "

#: The targets of issue 2, "Speed".
TARGETS = {
    "wall_ratio": ("pipeline wall / loop wall", "<=", 1.0),
    "extraction_speedup": ("extraction files/s per core, ours / loop", ">=", 1.5),
    "p50_ms": ("p50 extraction latency per format (ms)", "<", 2.5),
    "workers_speedup": ("2 workers / 1 worker throughput, multi_processing", ">=", 1.6),
    "workers_speedup_threads": ("2 workers / 1 worker throughput, multi_threading", ">=", 1.6),
    "beam_overhead_us": ("Beam overhead per file (us)", "<", 50.0),
}


def passes(target: str, value: float | None) -> bool | None:
    if value is None:
        return None
    _, op, limit = TARGETS[target]
    return {"<=": value <= limit, ">=": value >= limit, "<": value < limit}[op]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


#: ``--keep``: leave every run's catalog in the work folder.
KEEP_OUTPUTS = False


def discard(path: str) -> None:
    """Remove a run's output once checked, unless ``--keep``."""
    if not KEEP_OUTPUTS:
        shutil.rmtree(path, ignore_errors=True)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine -------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.processor())
    meminfo = _read("/proc/meminfo") or ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), None)
    cpu_max = (_read("/sys/fs/cgroup/cpu.max") or "").split()
    cgroup_cpus = int(cpu_max[0]) / int(cpu_max[1]) if len(cpu_max) == 2 and cpu_max[0] != "max" else None
    versions = {}
    for name in ("apache_beam", "pydicom", "astropy", "h5py", "netCDF4", "pyarrow", "numpy", "fsspec"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001  (a missing library is reported, not fatal)
            versions[name] = f"unavailable ({type(exc).__name__})"
    try:
        import h5py
        import netCDF4

        versions["libhdf5"] = h5py.version.hdf5_version
        versions["libnetcdf"] = netCDF4.__netcdf4libversion__
    except ImportError:
        pass
    try:
        from pipelines import __version__ as metaextract_version
    except ImportError:
        metaextract_version = None
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cgroup_cpu_limit": cgroup_cpus,
        "ram_gb": round(mem_kb / 1024**2, 1) if mem_kb else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "metaextract": metaextract_version,
        "libraries": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_busy_s() -> float | None:
    """Seconds of CPU time all processes on the machine have used (``/proc/stat``)."""
    line = (_read("/proc/stat") or "").splitlines()[:1]
    if not line or not line[0].startswith("cpu "):
        return None
    fields = [int(x) for x in line[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


_CORPUS_FILES: list[str] = []


def set_corpus(corpus_dir: str) -> None:
    _CORPUS_FILES[:] = [os.path.join(d, f) for d, _, names in os.walk(corpus_dir) for f in sorted(names)]


def warm_cache() -> float:
    """Read the whole corpus, so that the next run reads from the page cache, not the disk.

    Called before every measured run: on a shared machine (or with proactive reclaim such as
    DAMON) the corpus's pages are evicted within minutes, and a run that reads from disk
    measures the disk.
    """
    start = time.perf_counter()
    buffer = bytearray(1 << 20)
    for path in _CORPUS_FILES:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    return time.perf_counter() - start


def byte_compile() -> None:
    """Byte-compile metaextract's modules (``__pycache__``), as an installed copy has them.

    ``pip install .`` writes them, and Python does on a module's first import, unless the
    environment says not to (``PYTHONDONTWRITEBYTECODE``, set on some CI machines, ours among
    them): then every process of every run (the launcher, the extraction template) compiles
    the package's 20,000 lines again, about 0.1 s each, which no user's installation pays."""
    import compileall

    for package in ("pipelines", "transforms"):
        compileall.compile_dir(os.path.join(REPO, package), quiet=1)


# --- subprocesses ------------------------------------------------------------------------


def run_measured(cmd: Sequence[str], *, check: bool = True) -> dict[str, Any]:
    """Run ``cmd``; wall time (perf_counter), user+sys CPU and peak RSS of it and its children."""
    warm_cache()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if check and proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "returncode": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }


def metaextract_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "metaextract")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "pipelines.catalog"]


def result_line(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise RuntimeError(f"no result line in output:\n{stdout[-2000:]}")


def check_pipeline_output(out_dir: str, expected_files: int) -> dict[str, Any]:
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("files_total") != expected_files:
        raise RuntimeError(f"pipeline cataloged {manifest.get('files_total')} files, expected {expected_files}")
    return manifest.get("counts", {})


def check_loop_output(path: str, expected_files: int) -> dict[str, int]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["format", "status"])
    if table.num_rows != expected_files:
        raise RuntimeError(f"plain loop wrote {table.num_rows} rows, expected {expected_files}")
    counts: dict[str, int] = {}
    for fmt, status in zip(table["format"].to_pylist(), table["status"].to_pylist()):
        counts[f"{fmt}/{status}"] = counts.get(f"{fmt}/{status}", 0) + 1
    return counts


def not_ok(counts: dict[str, Any]) -> int:
    """Files whose status is not ``ok``, from manifest counts or ``fmt/status`` counts."""
    if all(isinstance(v, dict) for v in counts.values()):
        return sum(n for by in counts.values() for status, n in by.items() if status != "ok")
    return sum(n for key, n in counts.items() if not key.endswith("/ok"))


def summarize(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 4) for s in samples],
    }


# --- (a) whole process -------------------------------------------------------------------


def bench_whole_process(corpus_dir: str, files: int, runs: int, work: str) -> dict[str, Any]:
    def pipeline(tag: str) -> dict[str, Any]:
        out = os.path.join(work, f"pipeline-{tag}")
        result = run_measured(metaextract_command() + ["--input", corpus_dir, "--output", out])
        result["counts"] = check_pipeline_output(out, files)
        discard(out)
        return result

    def loop(tag: str) -> dict[str, Any]:
        out = os.path.join(work, f"loop-{tag}", "catalog.parquet")
        result = run_measured([sys.executable, os.path.join(HERE, "plain_loop.py"), "--input", corpus_dir, "--output", out])
        result["counts"] = check_loop_output(out, files)
        discard(os.path.dirname(out))
        return result

    log("(a) warm-up: one run of each, not counted")
    pipeline("warmup")
    loop("warmup")
    samples: dict[str, list[dict[str, Any]]] = {"pipeline": [], "loop": []}
    for r in range(runs):
        order = [("pipeline", pipeline), ("loop", loop)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            result = fn(str(r))
            samples[name].append(result)
            log(f"(a) run {r + 1}/{runs} {name}: {result['wall_s']:.2f} s, {files / result['wall_s']:.0f} files/s")
    out: dict[str, Any] = {}
    for name, results in samples.items():
        wall = summarize([x["wall_s"] for x in results])
        out[name] = {
            "wall_s": wall,
            "files_per_s": files / wall["median"],
            "cpu_s": summarize([x["cpu_s"] for x in results]),
            "max_rss_mb": max(x["max_rss_mb"] for x in results),
            "not_ok_files": not_ok(results[-1]["counts"]),
            "counts": results[-1]["counts"],
        }
    out["wall_ratio"] = out["pipeline"]["wall_s"]["median"] / out["loop"]["wall_s"]["median"]
    return out


# --- (c) two workers against one ---------------------------------------------------------


def bench_workers(corpus_dir: str, files: int, runs: int, work: str, mode: str = "multi_processing",
                  ceiling: dict[str, Any] | None = None) -> dict[str, Any]:
    """2 workers vs 1 in running mode ``mode``, on the corpus and on one file per format.

    The one-file-per-format runs give each mode's fixed cost (worker start-up); the speed-up
    net of it is what more workers buy per file.
    """
    tiny = [os.path.join(corpus_dir, corpus_mod.file_name(fmt, 0)) for fmt in corpus_mod.FORMATS]
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in ("1", "2", "1_tiny", "2_tiny")}
    for r in range(runs):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            for inputs, suffix, expected in (([corpus_dir], "", files), (tiny, "_tiny", len(tiny))):
                out = os.path.join(work, f"{mode}{workers}{suffix}-{r}")
                cmd = metaextract_command() + [arg for i in inputs for arg in ("--input", i)] + [
                    "--output", out,
                    f"--direct_running_mode={mode}", f"--direct_num_workers={workers}",
                ]  # fmt: skip
                result = run_measured(cmd)
                check_pipeline_output(out, expected)
                discard(out)
                samples[f"{workers}{suffix}"].append(result)
        log(
            f"(c) {mode} run {r + 1}/{runs}: 1 worker {samples['1'][-1]['wall_s']:.2f} s, 2 workers {samples['2'][-1]['wall_s']:.2f} s "
            f"(one file per format: {samples['1_tiny'][-1]['wall_s']:.2f} s, {samples['2_tiny'][-1]['wall_s']:.2f} s)"
        )

    def med(key: str, field: str = "wall_s") -> float:
        return statistics.median(x[field] for x in samples[key])

    if ceiling is None:
        ceiling = machine_parallel_ceiling(runs)
    net_one = med("1") - med("1_tiny")
    net_two = med("2") - med("2_tiny")
    return {
        "mode": mode,
        "one_worker_wall_s": summarize([x["wall_s"] for x in samples["1"]]),
        "two_workers_wall_s": summarize([x["wall_s"] for x in samples["2"]]),
        "one_worker_tiny_wall_s": summarize([x["wall_s"] for x in samples["1_tiny"]]),
        "two_workers_tiny_wall_s": summarize([x["wall_s"] for x in samples["2_tiny"]]),
        "one_worker_cpu_s": summarize([x["cpu_s"] for x in samples["1"]]),
        "two_workers_cpu_s": summarize([x["cpu_s"] for x in samples["2"]]),
        "speedup": med("1") / med("2"),
        "speedup_net_of_startup": net_one / net_two if net_two > 0 else None,
        "machine_parallel_ceiling": ceiling,
    }


#: A CPU-bound Python loop (no I/O, no memory traffic to speak of) that takes about a second.
_SPIN = "s = 0\nfor i in range(12_000_000):\n    s += i\n"


def machine_parallel_ceiling(runs: int) -> dict[str, Any]:
    """What two processes at once get from this machine: a CPU-bound Python loop run alone
    and as two copies at once, alternated ``runs`` times; the ratio ``2 x alone / together``
    is 2.0 on two real, idle cores (two vCPUs that share a physical core, or a busy host, give
    less). The ceiling of any two-worker speed-up measured in the same run."""
    alone, together = [], []
    for _ in range(runs):
        cmd = [sys.executable, "-c", _SPIN]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        procs = [subprocess.Popen(cmd) for _ in range(2)]
        for proc in procs:
            proc.wait()
        together.append(time.perf_counter() - t)
    ratio = 2 * statistics.median(alone) / statistics.median(together)
    log(f"(c) machine ceiling: one loop {statistics.median(alone):.2f} s, two at once {statistics.median(together):.2f} s: {ratio:.2f}x")
    return {"alone_wall_s": summarize(alone), "two_at_once_wall_s": summarize(together), "ratio": ratio}


# --- (b) extraction alone, in this process -----------------------------------------------


def kind_of(path: str) -> str:
    """The corpus kind from the file name: ``dicom``, ``fits``, ``hdf5``, ``netcdf4``, ``netcdf3``."""
    name = os.path.basename(path)
    if name.startswith("nc4_"):
        return "netcdf4"
    if name.startswith("nc3"):
        return "netcdf3"
    return os.path.basename(os.path.dirname(path))


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def bench_extraction(corpus_dir: str, runs: int) -> dict[str, Any]:
    import gc

    import plain_loop

    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.listing import list_input

    infos = list(list_input(corpus_dir))
    stats = {info.path: os.stat(info.path) for info in infos}
    kinds = {info.path: kind_of(info.path) for info in infos}

    clock, cpu_clock = time.perf_counter, time.process_time

    def ours() -> tuple[list[tuple[float, float]], int]:
        latencies, bad = [], 0
        for info in infos:
            t0, c0 = clock(), cpu_clock()
            rows = catalog_rows(detect(info))
            latencies.append((clock() - t0, cpu_clock() - c0))
            bad += rows["files"][0]["status"] != "ok"
        return latencies, bad

    def loop() -> tuple[list[tuple[float, float]], int]:
        latencies, bad = [], 0
        for info in infos:
            t0, c0 = clock(), cpu_clock()
            row = plain_loop.catalog_row(info.path, stats[info.path])
            latencies.append((clock() - t0, cpu_clock() - c0))
            bad += row["status"] != "ok"
        return latencies, bad

    sides: dict[str, Callable[[], tuple[list[tuple[float, float]], int]]] = {"metaextract": ours, "loop": loop}
    log("(b) warm-up pass of both extractors, not counted")
    for fn in sides.values():
        fn()
    per_file: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in sides}
    cpu_s: dict[str, list[float]] = {name: [] for name in sides}
    wall_s: dict[str, list[float]] = {name: [] for name in sides}
    bad: dict[str, int] = {}
    for r in range(runs):
        names = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in names:
            warm_cache()
            gc.collect()
            c0, w0 = time.process_time(), time.perf_counter()
            latencies, bad[name] = sides[name]()
            cpu_s[name].append(time.process_time() - c0)
            wall_s[name].append(time.perf_counter() - w0)
            per_file[name].append(latencies)
        log(f"(b) round {r + 1}/{runs}: " + ", ".join(f"{n} {len(infos) / wall_s[n][-1]:.0f} files/s" for n in sides))
    out: dict[str, Any] = {"files": len(infos)}
    for name in sides:
        by_kind: dict[str, list[tuple[float, float]]] = {}
        by_format: dict[str, list[tuple[float, float]]] = {}
        for latencies in per_file[name]:
            for info, (seconds, cpu_seconds) in zip(infos, latencies):
                kind = kinds[info.path]
                sample = (seconds * 1e3, cpu_seconds * 1e3)
                by_kind.setdefault(kind, []).append(sample)
                by_format.setdefault("netcdf" if kind.startswith("netcdf") else kind, []).append(sample)
        cpu = statistics.median(cpu_s[name])
        out[name] = {
            "files_per_cpu_s": len(infos) / cpu,
            "files_per_s": len(infos) / statistics.median(wall_s[name]),
            "cpu_s": summarize(cpu_s[name]),
            "wall_s": summarize(wall_s[name]),
            "not_ok_files": bad[name],
            "latency_ms": {
                kind: {
                    "p50": percentile([w for w, _ in v], 50),
                    "p95": percentile([w for w, _ in v], 95),
                    "cpu_p50": percentile([c for _, c in v], 50),
                    "cpu_p95": percentile([c for _, c in v], 95),
                    "n": len(v),
                }
                for kind, v in sorted(by_format.items()) + sorted((k, v) for k, v in by_kind.items() if k.startswith("netcdf"))
            },
        }
    out["speedup"] = out["metaextract"]["files_per_cpu_s"] / out["loop"]["files_per_cpu_s"]
    return out


# --- (d) Beam's overhead -----------------------------------------------------------------


def inproc_pipeline(inputs: list[str], output: str, profile: str | None = None) -> dict[str, Any]:
    """Child mode: time ``pipelines.catalog.main`` inside its process (imports timed apart)."""
    t0 = time.perf_counter()
    from pipelines import catalog

    imported = time.perf_counter()
    argv = [arg for i in inputs for arg in ("--input", i)] + ["--output", output, "--progress", "off"]
    profiler = cProfile.Profile() if profile else None
    c0 = time.process_time()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the summary table
        if profiler:
            profiler.enable()
        code = catalog.main(argv)
        if profiler:
            profiler.disable()
    end = time.perf_counter()
    if profiler:
        profiler.dump_stats(profile)
    if code not in (0, 3):  # 3: the run raised an alert, still a complete catalog
        raise RuntimeError(f"metaextract exited with {code}")
    with open(os.path.join(output, "manifest.json")) as f:
        files = json.load(f)["files_total"]
    return {"import_s": imported - t0, "run_s": end - start, "cpu_s": time.process_time() - c0, "files": files}


def inproc_floor() -> dict[str, Any]:
    """Child mode: Beam's floor, the smallest pipeline with an output (Create, Map,
    CombineGlobally) on the runner ``metaextract`` uses, timed inside its process."""
    t0 = time.perf_counter()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.catalog import direct_runner

    imported = time.perf_counter()
    options = PipelineOptions([])
    c0 = time.process_time()
    start = time.perf_counter()
    with beam.Pipeline(runner=direct_runner(options), options=options) as p:
        _ = p | beam.Create([1, 2, 3, 4]) | beam.Map(lambda x: x + 1) | beam.combiners.Count.Globally()
    end = time.perf_counter()
    return {"import_s": imported - t0, "run_s": end - start, "cpu_s": time.process_time() - c0, "files": 0}


def inproc_nobeam(inputs: list[str], output: str) -> dict[str, Any]:
    """Child mode: the pipeline's work without Beam: list, detect, extract, write each table."""
    t0 = time.perf_counter()
    import pyarrow as pa

    from pipelines.catalog import catalog_tables
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.listing import list_input
    from transforms.schemas import ROLLUP_TABLES
    from transforms.sink import join, write_table

    imported = time.perf_counter()
    c0 = time.process_time()
    start = time.perf_counter()
    tables = catalog_tables()  # loads the extractors (and their libraries), as the pipeline does
    registry_done = time.perf_counter()
    seen: dict[str, Any] = {}
    for spec in inputs:
        for info in list_input(spec):
            seen.setdefault(info.path, info)
    listed = time.perf_counter()
    rows: dict[str, list[dict]] = {name: [] for name in tables}
    for info in seen.values():
        for table, table_rows in catalog_rows(detect(info)).items():
            rows[table].extend(table_rows)
    extracted = time.perf_counter()
    for name, schema in tables.items():
        write_table(join(output, name, "part-00000.parquet"), pa.Table.from_pylist(rows[name], schema=schema))
    written = time.perf_counter()
    for name, table_rows in rollup_rows(rows).items():  # the roll-up tables, as the pipeline makes them
        write_table(join(output, name, "part-00000.parquet"), pa.Table.from_pylist(table_rows, schema=ROLLUP_TABLES[name]))
    end = time.perf_counter()
    return {
        "import_s": imported - t0,
        "run_s": end - start,
        "cpu_s": time.process_time() - c0,
        "registry_s": registry_done - start,
        "list_s": listed - registry_done,
        "extract_s": extracted - listed,
        "write_s": written - extracted,
        "rollups_s": end - written,
        "files": len(seen),
    }


def rollup_rows(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The roll-up tables of all the rows, with the pipeline's functions and no Beam."""
    from transforms import rollups

    series: dict = {}
    variables: dict = {}
    dicom_fn, variable_fn = rollups.DicomRollupFn(), rollups.VariableRollupFn()
    for kind, key, partial in rollups.batch_partials(rows):
        if kind == rollups.DICOM_SERIES:
            series[key] = dicom_fn.add_input(series.get(key) or dicom_fn.create_accumulator(), partial)
        else:
            variables[key] = variable_fn.add_input(variables.get(key) or variable_fn.create_accumulator(), partial)
    studies: dict = {}
    for key, acc in series.items():
        study, acc = rollups.series_to_study((key, acc))
        studies[study] = rollups.merge(studies.get(study) or rollups.DicomAccumulator(), acc)
    return {
        rollups.DICOM_SERIES: [rollups.series_row(k, a) for k, a in series.items()],
        rollups.DICOM_STUDIES: [rollups.study_row(k, a) for k, a in studies.items()],
        rollups.VARIABLES: [rollups.variable_row(k, a) for k, a in variables.items()],
    }


#: Memoized detection and extraction results (child mode ``--_memo``), keyed by path.
_MEMO_DETECTED: dict[str, Any] = {}
_MEMO_ROWS: dict[str, Any] = {}


def memo_detect(info, storage_options=None):
    return _MEMO_DETECTED[info.path]


def memo_catalog_rows(detected, storage_options=None, extract_options=None):
    return _MEMO_ROWS[detected.info.path]


def memo_read_many(reader, items):
    """``_Reader.read_many`` memoized: the rows of each file, no extraction process."""
    from transforms.work import FileWork

    out = []
    for item in items:
        path = item.info.path if hasattr(item, "info") else item.path
        out.append((FileWork(_MEMO_ROWS[path]), {}))  # one run per process: no copy needed
    return out


def memo_read(reader, item):
    return memo_read_many(reader, [item])[0]


def install_memo(inputs: list[str]) -> None:
    """Run detection and extraction now, then make both a dictionary lookup.

    What is left of a run is listing, Beam and writing: the pipeline minus the same work
    without Beam is then Beam's overhead, free of the extractors' (noisy) cost. The pipeline
    reads files in its extraction process through ``transforms.extract._Reader``, so that is
    what is replaced (in this process: the in-process runner's DoFns use the same class); the
    lookups live in this module, imported by name, so that Beam pickles them by reference.
    """
    from transforms import detect as detect_module
    from transforms import extract as extract_module
    from transforms.listing import list_input

    for spec in inputs:
        for info in list_input(spec):
            detected = detect_module.detect(info)
            _MEMO_DETECTED[info.path] = detected
            _MEMO_ROWS[info.path] = extract_module.catalog_rows(detected)
    detect_module.detect = memo_detect
    extract_module.catalog_rows = memo_catalog_rows
    extract_module._Reader.read_many = memo_read_many
    extract_module._Reader.read = memo_read


def child(mode: str, output: str, inputs: list[str], memo: bool, profile: str | None) -> int:
    if memo:
        import bench_speed  # this file under its module name: Beam pickles its functions by reference

        bench_speed.install_memo(inputs)
    if mode == "pipeline":
        result = inproc_pipeline(inputs, output, profile)
    elif mode == "floor":
        result = inproc_floor()
    else:
        result = inproc_nobeam(inputs, output)
    print(RESULT_MARK + json.dumps(result))
    return 0


def bench_overhead(corpus_dir: str, files: int, runs: int, work: str) -> dict[str, Any]:
    """Pipeline vs the same work without Beam, timed inside each process (imports excluded).

    Main measurement: detection and extraction memoized (computed before the clock starts), on
    the whole corpus and on one file per format, so that the difference is Beam's overhead and
    splits into a fixed start-up cost and a marginal cost per file. Secondary: the same with
    real extraction, as the spec's ``pipeline - listing - extraction`` formula puts it.
    """
    tiny = [os.path.join(corpus_dir, corpus_mod.file_name(fmt, 0)) for fmt in corpus_mod.FORMATS]

    def measure(mode: str, inputs: list[str], memo: bool, expected: int, tag: str) -> dict[str, Any]:
        out = os.path.join(work, f"inproc-{mode}-{tag}")
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode, "--_output", out]
        cmd += [arg for i in inputs for arg in ("--_input", i)] + (["--_memo"] if memo else [])
        result = result_line(run_measured(cmd)["stdout"])
        if result["files"] != expected:
            raise RuntimeError(f"{mode} cataloged {result['files']} files, expected {expected}")
        discard(out)
        return result

    cases = {
        "memo_full": ([corpus_dir], True, files),
        "memo_tiny": (tiny, True, len(tiny)),
        "real_full": ([corpus_dir], False, files),
    }
    samples: dict[str, list[dict[str, Any]]] = {f"{m}_{c}": [] for m in ("pipeline", "nobeam") for c in cases}
    samples["floor"] = []
    for r in range(runs):
        for case, (inputs, memo, expected) in cases.items():
            for mode in ("pipeline", "nobeam") if r % 2 == 0 else ("nobeam", "pipeline"):
                samples[f"{mode}_{case}"].append(measure(mode, inputs, memo, expected, f"{case}-{r}"))
        samples["floor"].append(measure("floor", [], False, 0, f"floor-{r}"))
        last = {k: v[-1]["run_s"] for k, v in samples.items()}
        log(
            f"(d) run {r + 1}/{runs}: extraction memoized: pipeline {last['pipeline_memo_full']:.2f} s vs no Beam "
            f"{last['nobeam_memo_full']:.2f} s (one file per format: {last['pipeline_memo_tiny']:.2f} s vs "
            f"{last['nobeam_memo_tiny']:.2f} s); real extraction: {last['pipeline_real_full']:.2f} s vs {last['nobeam_real_full']:.2f} s"
        )

    def med(name: str, key: str = "run_s") -> float:
        return statistics.median(x[key] for x in samples[name])

    total = med("pipeline_memo_full") - med("nobeam_memo_full")
    fixed = med("pipeline_memo_tiny") - med("nobeam_memo_tiny")
    total_cpu = med("pipeline_memo_full", "cpu_s") - med("nobeam_memo_full", "cpu_s")
    real = med("pipeline_real_full") - med("nobeam_real_full")
    return {
        "samples_run_s": {k: summarize([x["run_s"] for x in v]) for k, v in samples.items()},
        "samples_cpu_s": {k: summarize([x["cpu_s"] for x in v]) for k, v in samples.items()},
        "pipeline_import_s": med("pipeline_real_full", "import_s"),
        "nobeam_registry_s": med("nobeam_real_full", "registry_s"),
        "nobeam_list_s": med("nobeam_real_full", "list_s"),
        "nobeam_extract_s": med("nobeam_real_full", "extract_s"),
        "nobeam_write_s": med("nobeam_real_full", "write_s"),
        "nobeam_rollups_s": med("nobeam_real_full", "rollups_s"),
        "overhead_s": total,
        "overhead_us_per_file": total / files * 1e6,
        "overhead_cpu_us_per_file": total_cpu / files * 1e6,
        "fixed_startup_s": fixed,
        "beam_floor_s": med("floor"),
        "beam_floor_us_per_file": med("floor") / files * 1e6,
        "marginal_us_per_file": (total - fixed) / (files - len(tiny)) * 1e6 if files > len(tiny) else None,
        "real_extraction_overhead_us_per_file": real / files * 1e6,
    }


# --- profile -----------------------------------------------------------------------------


#: Phases of a profiled pipeline run: (label, file suffix, function name), cumulative time.
PROFILE_MARKERS = [
    ("metaextract main (catalog.main)", "pipelines/catalog.py", "main"),
    ("flag parsing (parse_flags)", "pipelines/options.py", "parse_flags"),
    ("input check, listing #1 (list_inputs)", "transforms/listing.py", "list_inputs"),
    ("pipeline construction (CatalogFiles.expand)", "pipelines/catalog.py", "expand"),
    ("Pipeline.run, total", "apache_beam/pipeline.py", "run"),
    ("  graph translation (Pipeline.to_runner_api)", "apache_beam/pipeline.py", "to_runner_api"),
    ("  bundles (BundleProcessor.process_bundle)", "runners/worker/bundle_processor.py", "process_bundle"),
    ("    listing #2 (list_input)", "transforms/listing.py", "list_input"),
    ("    detection (detect)", "transforms/detect.py", "detect"),
    ("    extraction (catalog_rows)", "transforms/extract.py", "catalog_rows"),
    ("    Parquet shards (write_shard)", "transforms/sink.py", "write_shard"),
    ("    publish (publish)", "transforms/sink.py", "publish"),
]


def _cumulative(stats: pstats.Stats, suffix: str, func: str) -> float:
    found = [ct for (file, _, name), (_, _, _, ct, _) in stats.stats.items() if file.endswith(suffix) and name == func]
    return max(found) if found else 0.0


def bench_profile(corpus_dir: str, work: str) -> dict[str, Any]:
    """Profile one in-process pipeline run, then each format's extractor on its own."""
    prof = os.path.join(RESULTS_DIR, "pipeline.prof")
    out = os.path.join(work, "profile-run")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", "pipeline", "--_output", out, "--_input", corpus_dir, "--_profile", prof]
    result = result_line(run_measured(cmd)["stdout"])
    discard(out)
    stats = pstats.Stats(prof)
    phases = {label: _cumulative(stats, suffix, func) for label, suffix, func in PROFILE_MARKERS}
    inside = sum(v for k, v in phases.items() if k.startswith("    "))
    phases["    Beam's per-element work in bundles (bundles - the above)"] = phases["  bundles (BundleProcessor.process_bundle)"] - inside
    phases["  runner set-up and the rest of Pipeline.run"] = (
        phases["Pipeline.run, total"]
        - phases["  graph translation (Pipeline.to_runner_api)"]
        - phases["  bundles (BundleProcessor.process_bundle)"]
    )
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(60)
    with open(os.path.join(RESULTS_DIR, "pipeline-profile.txt"), "w") as f:
        f.write(text.getvalue())
    project = sorted(
        (
            (ct, nc, f"{os.path.relpath(file, REPO)}:{line}({name})")
            for (file, line, name), (_, nc, _, ct, _) in stats.stats.items()
            if file.startswith(REPO) and not file.startswith(HERE) and name != "run"
        ),
        reverse=True,
    )[:15]
    graph = {
        "applied_transforms": next((nc for (f, _, n), (_, nc, *_r) in stats.stats.items() if f.endswith("apache_beam/pipeline.py") and n == "_apply_internal"), None),
        "bundles": next((nc for (f, _, n), (_, nc, *_r) in stats.stats.items() if f.endswith("runners/worker/bundle_processor.py") and n == "process_bundle"), None),
    }
    return {
        "profiled_run_s": result["run_s"],
        "phases_s": phases,
        "graph": graph,
        "project_functions": [{"function": f, "cumulative_s": round(ct, 3), "calls": nc} for ct, nc, f in project],
        "stats_file": os.path.relpath(prof, REPO),
        "extractors": profile_extractors(corpus_dir),
    }


def profile_extractors(corpus_dir: str, top: int = 8) -> dict[str, list[dict[str, Any]]]:
    """Each format's hot spots: the functions with the most own time over its files."""
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.listing import list_input

    hot: dict[str, list[dict[str, Any]]] = {}
    text = io.StringIO()
    for fmt in corpus_mod.FORMATS:
        infos = list(list_input(os.path.join(corpus_dir, fmt)))
        for info in infos[:5]:  # warm up
            catalog_rows(detect(info))
        warm_cache()
        profiler = cProfile.Profile()
        profiler.enable()
        for info in infos:
            catalog_rows(detect(info))
        profiler.disable()
        stats = pstats.Stats(profiler, stream=text)
        text.write(f"\n===== {fmt}: {len(infos)} files =====\n")
        stats.sort_stats("tottime").print_stats(25)
        total = stats.total_tt
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        hot[fmt] = [
            {
                "function": f"{os.path.relpath(file, REPO) if file.startswith(REPO) else os.path.basename(file)}:{line}({name})",
                "own_s": round(tt, 4),
                "share": round(tt / total, 3) if total else None,
                "calls_per_file": round(nc / len(infos), 1),
            }
            for (file, line, name), (_, nc, tt, _, _) in rows
        ]
    with open(os.path.join(RESULTS_DIR, "extractor-profile.txt"), "w") as f:
        f.write(text.getvalue())
    return hot


# --- report ------------------------------------------------------------------------------


def fmt_s(summary: dict[str, float]) -> str:
    return f"{summary['median']:.2f} s [{summary['min']:.2f}-{summary['max']:.2f}]"


def report(results: dict[str, Any]) -> str:
    lines = []
    n = results["files"]
    lines.append(f"### metaextract speed benchmark: {n:,} files ({results['per_format']} per format, {results['corpus_mb']:,.0f} MB), median of {results['runs']} runs")
    lines.append("")
    lines.append("| measure | metaextract | plain loop | ratio | target | result |")
    lines.append("|---|---|---|---|---|---|")
    a = results.get("whole_process")
    if a:
        p, l = a["pipeline"], a["loop"]
        lines.append(
            f"| (a) whole-process wall time, median [min-max]; ratio pipeline/loop | {fmt_s(p['wall_s'])} | {fmt_s(l['wall_s'])} | "
            f"{a['wall_ratio']:.2f} | <= 1.0 | {verdict(passes('wall_ratio', a['wall_ratio']))} |"
        )
        lines.append(f"| (a) whole-process files/s; ratio pipeline/loop | {p['files_per_s']:,.0f} | {l['files_per_s']:,.0f} | {p['files_per_s'] / l['files_per_s']:.2f} | | |")
        lines.append(f"| (a) CPU time (user+sys, with children); ratio pipeline/loop | {p['cpu_s']['median']:.2f} s | {l['cpu_s']['median']:.2f} s | {p['cpu_s']['median'] / l['cpu_s']['median']:.2f} | | |")
        lines.append(f"| (a) peak RSS | {p['max_rss_mb']:,.0f} MB | {l['max_rss_mb']:,.0f} MB | | | |")
        lines.append(f"| (a) files not `ok` | {p['not_ok_files']} | {l['not_ok_files']} | | 0 | |")
    b = results.get("extraction")
    nan = float("nan")
    if b:
        m, l = b["metaextract"], b["loop"]
        lines.append(
            f"| (b) extraction files/s per core (files per CPU second); ratio ours/loop | {m['files_per_cpu_s']:,.0f} | {l['files_per_cpu_s']:,.0f} | "
            f"{b['speedup']:.2f} | >= 1.5 | {verdict(passes('extraction_speedup', b['speedup']))} |"
        )
        lines.append(f"| (b) extraction files/s (wall, one process); ratio ours/loop | {m['files_per_s']:,.0f} | {l['files_per_s']:,.0f} | {m['files_per_s'] / l['files_per_s']:.2f} | | |")
        for kind, lat in m["latency_ms"].items():
            loop_lat = l["latency_ms"].get(kind, {})
            is_format = kind in corpus_mod.FORMATS
            target = "< 2.5 ms" if is_format else "(detail)"
            result = verdict(passes("p50_ms", lat["p50"])) if is_format else ""
            lines.append(
                f"| (b) {kind} latency p50 / p95 (CPU p50); ratio loop/ours p50 | {lat['p50']:.2f} / {lat['p95']:.2f} ms ({lat['cpu_p50']:.2f}) | "
                f"{loop_lat.get('p50', nan):.2f} / {loop_lat.get('p95', nan):.2f} ms ({loop_lat.get('cpu_p50', nan):.2f}) | "
                f"{loop_lat.get('p50', nan) / lat['p50']:.2f} | {target} | {result} |"
            )
        lines.append(f"| (b) files not `ok` | {m['not_ok_files']} | {l['not_ok_files']} | | 0 | |")
    for key, target in (("workers", "workers_speedup"), ("workers_threads", "workers_speedup_threads")):
        c = results.get(key)
        if not c:
            continue
        mode = c.get("mode", "multi_processing")
        lines.append(
            f"| (c) {mode} wall, 2 workers vs 1; ratio 1/2 | {fmt_s(c['two_workers_wall_s'])} vs {fmt_s(c['one_worker_wall_s'])} | | "
            f"{c['speedup']:.2f} | >= 1.6 | {verdict(passes(target, c['speedup']))} |"
        )
        lines.append(
            f"| (c) {mode}, one file per format (start-up cost) | {fmt_s(c['two_workers_tiny_wall_s'])} vs {fmt_s(c['one_worker_tiny_wall_s'])} | | | | |"
        )
        if c["speedup_net_of_startup"] is not None:
            lines.append(f"| (c) {mode} ratio 1/2 net of start-up (full - one file per format) | | | {c['speedup_net_of_startup']:.2f} | | |")
    ceiling = (results.get("workers") or {}).get("machine_parallel_ceiling")
    if ceiling:
        lines.append(
            f"| (c) this machine's ceiling: a CPU-bound Python loop, two copies at once vs one (2 x alone / together; 2.0 on two idle cores) | "
            f"{fmt_s(ceiling['two_at_once_wall_s'])} vs {fmt_s(ceiling['alone_wall_s'])} | | {ceiling['ratio']:.2f} | | |"
        )
    d = results.get("overhead")
    if d:
        runs_s = d["samples_run_s"]
        lines.append(
            f"| (d) Beam overhead per file: (pipeline - same work without Beam) / files, extraction memoized | "
            f"{d['overhead_us_per_file']:,.0f} us (CPU: {d['overhead_cpu_us_per_file']:,.0f} us) | | | < 50 us | "
            f"{verdict(passes('beam_overhead_us', d['overhead_us_per_file']))} |"
        )
        lines.append(f"| (d) of which fixed start-up (one file per format) | {d['fixed_startup_s']:.2f} s | | | | |")
        if "beam_floor_s" in d:
            lines.append(
                f"| (d) Beam's floor: the smallest pipeline (Create, Map, CombineGlobally) on the same runner; as us per file of this corpus | "
                f"{d['beam_floor_s']:.2f} s; {d['beam_floor_us_per_file']:,.0f} us | | | | |"
            )
        if d["marginal_us_per_file"] is not None:
            lines.append(f"| (d) of which marginal, per file | {d['marginal_us_per_file']:,.0f} us | | | | |")
        lines.append(
            f"| (d) in-process, extraction memoized: pipeline vs no Beam | {fmt_s(runs_s['pipeline_memo_full'])} | "
            f"{fmt_s(runs_s['nobeam_memo_full'])} (no Beam) | | | |"
        )
        lines.append(
            f"| (d) in-process, real extraction: pipeline vs no Beam (no Beam: extractor loading {d['nobeam_registry_s']:.2f} s, "
            f"list {d['nobeam_list_s']:.2f} s, extract {d['nobeam_extract_s']:.2f} s, write {d['nobeam_write_s']:.2f} s, "
            f"roll-ups {d['nobeam_rollups_s']:.2f} s) | "
            f"{fmt_s(runs_s['pipeline_real_full'])} | {fmt_s(runs_s['nobeam_real_full'])} (no Beam) | "
            f"{runs_s['pipeline_real_full']['median'] / runs_s['nobeam_real_full']['median']:.2f} | | |"
        )
        lines.append(f"| (d) same, as overhead per file | {d['real_extraction_overhead_us_per_file']:,.0f} us | | | | |")
        lines.append(f"| (d) import time of `pipelines.catalog` (Beam, libraries), not in the above | {d['pipeline_import_s']:.2f} s | | | | |")
    prof = results.get("profile")
    if prof:
        lines.append("")
        lines.append(f"Profile of one in-process pipeline run under cProfile ({prof['profiled_run_s']:.2f} s; `{prof['stats_file']}`):")
        lines.append("")
        lines.append("| phase (cumulative) | seconds | share |")
        lines.append("|---|---|---|")
        for label, seconds in prof["phases_s"].items():
            name = label.strip()
            indent = "&nbsp;" * 2 * (len(label) - len(name))
            lines.append(f"| {indent}{name} | {seconds:.2f} | {seconds / prof['profiled_run_s']:.0%} |")
        graph = prof.get("graph", {})
        lines.append("")
        lines.append(
            f"Pipeline graph: {graph.get('applied_transforms')} transforms applied (composites included), "
            f"{graph.get('bundles')} bundles (fused stages) run. Project functions by cumulative time: "
            + "; ".join(f"`{x['function']}` {x['cumulative_s']:.2f} s" for x in prof.get("project_functions", [])[:10])
            + "."
        )
        lines.append("")
        lines.append("Extractor hot spots (own time, cProfile; `benchmarks/results/extractor-profile.txt`):")
        lines.append("")
        for fmt, rows in prof["extractors"].items():
            spots = "; ".join(f"`{r['function']}` {r['share']:.0%} ({r['calls_per_file']:g}/file)" for r in rows[:4])
            lines.append(f"- {fmt}: {spots}")
    mach = results["machine"]
    others = results.get("other_processes_cores")
    if others is not None and others > 0.2:
        lines.append("")
        lines.append(
            f"**Warning: other processes kept {others:.1f} of the {mach['usable_cpus']} CPUs busy on average "
            f"while the benchmark ran: wall times are inflated and noisy; the CPU figures hold better.**"
        )
    libs = ", ".join(f"{k} {v}" for k, v in mach["libraries"].items())
    lines.append("")
    lines.append(
        f"Machine: {mach['cpu_model']}, {mach['usable_cpus']} usable CPUs"
        + (f" (cgroup limit {mach['cgroup_cpu_limit']:g})" if mach.get("cgroup_cpu_limit") else "")
        + f", {mach['ram_gb']} GB RAM, {mach['os']}, Python {mach['python']}; load average {mach['load_average_at_start']} at start"
        f" and {results.get('load_average_at_end')} at end; other processes used {others} CPUs on average during the run. Libraries: {libs}. metaextract {mach['metaextract']}, {results['date']}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_format", type=int, default=corpus_mod.DEFAULT_PER_FORMAT, help="corpus files per format (default %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each side, alternated (default %(default)s)")
    parser.add_argument("--corpus_dir", default=corpus_mod.DEFAULT_CORPUS_DIR, help="corpus cache (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the run outputs in benchmarks/_out (the corpus is always kept)")
    parser.add_argument("--only", default="abcd", help="which measurements to run, e.g. 'ab' (default: all of abcd)")
    parser.add_argument("--profile", action="store_true", help="also profile one pipeline run with cProfile")
    parser.add_argument("--output_json", default=os.path.join(RESULTS_DIR, "speed.json"), help="where to write the results (default %(default)s)")
    # child modes (internal)
    parser.add_argument("--_child", choices=["pipeline", "nobeam", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--_output", help=argparse.SUPPRESS)
    parser.add_argument("--_input", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--_profile", help=argparse.SUPPRESS)
    parser.add_argument("--_memo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return child(args._child, args._output, args._input, args._memo, args._profile)
    if args.per_format < 1 or args.runs < 1:
        parser.error("--per_format and --runs must be >= 1")

    corpus_dir = os.path.abspath(args.corpus_dir)
    machine = machine_info()
    log(f"machine: {machine['cpu_model']}, {machine['usable_cpus']} CPUs, load {machine['load_average_at_start']}")
    corpus_mod.ensure_corpus(corpus_dir, args.per_format, log=log)
    byte_compile()
    files = 4 * args.per_format
    nbytes = corpus_mod.corpus_bytes(corpus_dir)
    set_corpus(corpus_dir)
    warm_cache()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "per_format": args.per_format,
        "files": files,
        "corpus_mb": nbytes / 1e6,
        "corpus_dir": corpus_dir,
        "runs": args.runs,
        "command": metaextract_command(),
        "machine": machine,
        "targets": {k: {"description": d, "op": op, "limit": lim} for k, (d, op, lim) in TARGETS.items()},
    }
    if args.keep:
        global KEEP_OUTPUTS
        KEEP_OUTPUTS = True
        work = os.path.join(HERE, "_out")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work, exist_ok=True)
        context: contextlib.AbstractContextManager = contextlib.nullcontext(work)
    else:
        context = tempfile.TemporaryDirectory(prefix="metaextract-bench-")
    busy0, own0, wall0 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    with context as work:
        if "a" in args.only:
            results["whole_process"] = bench_whole_process(corpus_dir, files, args.runs, work)
        if "b" in args.only:
            results["extraction"] = bench_extraction(corpus_dir, args.runs)
        if "c" in args.only:
            results["workers"] = bench_workers(corpus_dir, files, args.runs, work)
            results["workers_threads"] = bench_workers(corpus_dir, files, args.runs, work, "multi_threading",
                                                       results["workers"]["machine_parallel_ceiling"])
        if "d" in args.only:
            results["overhead"] = bench_overhead(corpus_dir, files, args.runs, work)
        if args.profile:
            log("profile: one in-process pipeline run under cProfile")
            results["profile"] = bench_profile(corpus_dir, work)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    busy1, own1, wall1 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    if busy0 is not None and busy1 is not None:
        # CPU that other processes used while the benchmark ran, in cores on average.
        results["other_processes_cores"] = round(max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0), 2)
    verdicts = {}
    if "whole_process" in results:
        verdicts["wall_ratio"] = passes("wall_ratio", results["whole_process"]["wall_ratio"])
    if "extraction" in results:
        verdicts["extraction_speedup"] = passes("extraction_speedup", results["extraction"]["speedup"])
        p50 = {k: v["p50"] for k, v in results["extraction"]["metaextract"]["latency_ms"].items() if k in corpus_mod.FORMATS}
        verdicts["p50_ms"] = all(passes("p50_ms", v) for v in p50.values())
    if "workers" in results:
        verdicts["workers_speedup"] = passes("workers_speedup", results["workers"]["speedup"])
    if "workers_threads" in results:
        verdicts["workers_speedup_threads"] = passes("workers_speedup_threads", results["workers_threads"]["speedup"])
    if "overhead" in results:
        verdicts["beam_overhead_us"] = passes("beam_overhead_us", results["overhead"]["overhead_us_per_file"])
    results["verdicts"] = {k: verdict(v) for k, v in verdicts.items()}
    table = report(results)
    results["markdown"] = table
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(results, f, indent=2)
    print(table)
    log(f"results written to {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
