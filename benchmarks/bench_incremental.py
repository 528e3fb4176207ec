"""Incremental-run benchmark: full run vs. re-runs with nothing / 1% changed (issue 4).

    python benchmarks/bench_incremental.py [--files 20000] [--runs 3] [--workdir DIR] [--keep]

The corpus is ``--files`` small files copied from the sample corpus in ``pipelines/sample_data``
(written by pydicom, astropy, h5py and netCDF4; a truncated HDF5 file and a text file among
them), so every copy is detected and extracted for real. Each round, measured with the
``metaextract`` command in a fresh process:

1. **full**: a fresh catalog (empty ``--output``), every file read;
2. **unchanged**: the same command again; the catalog at ``--output`` is the cache;
3. **1% changed**: 1% of the files rewritten (new modification time) first, then the same command.

Rounds alternate the three, ``--runs`` rounds; the table reports medians and the ratios of the
medians. Every run's manifest is checked (files, new/changed/unchanged counts). Results go to
``benchmarks/results/incremental.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "pipelines", "sample_data")
RESULTS = os.path.join(HERE, "results", "incremental.json")
TARGETS = {"unchanged": 10.0, "changed_1pct": 5.0}


def templates() -> list[str]:
    found = []
    for folder, _, names in os.walk(SAMPLE):
        found.extend(os.path.join(folder, n) for n in sorted(names))
    return sorted(found)


def make_corpus(root: str, n: int) -> list[str]:
    """``n`` copies of the sample files, 500 per folder, cycling through the templates."""
    sources = templates()
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        name = os.path.basename(src)
        stem, ext = os.path.splitext(name)
        folder = os.path.join(root, f"batch_{i // 500:03d}")
        os.makedirs(folder, exist_ok=True)
        dst = os.path.join(folder, f"{stem}_{i:06d}{ext}")
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


def change(paths: list[str], count: int, rng: random.Random) -> list[str]:
    """Rewrite ``count`` files (same bytes, later modification time): the cache sees them changed."""
    chosen = rng.sample(paths, count)
    stamp = time.time() + rng.randint(10, 10_000)
    for path in chosen:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (stamp, stamp))
    return chosen


def metaextract(corpus: str, output: str, extra: list[str] | None = None) -> tuple[float, dict]:
    """Wall time of one ``metaextract`` command (fresh process) and the manifest it wrote."""
    cmd = [sys.executable, "-m", "pipelines.catalog", "--input", corpus, "--output", output,
           "--progress", "off", *(extra or [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.join(HERE, ".."))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"metaextract failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(output, "manifest.json")) as f:
        return wall, json.load(f)


def check(manifest: dict, files: int, new: int, changed: int, unchanged: int, label: str) -> None:
    changes = manifest.get("changes") or {}
    got = (manifest["files_total"], changes.get("new", 0), changes.get("changed", 0), changes.get("unchanged", 0))
    if got != (files, new, changed, unchanged):
        raise SystemExit(f"{label}: expected files/new/changed/unchanged {(files, new, changed, unchanged)}, got {got}")


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--changed_fraction", type=float, default=0.01)
    parser.add_argument("--output_json", default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the corpus and catalogs")
    args = parser.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-incremental-")
    os.makedirs(workdir, exist_ok=True)
    corpus = os.path.join(workdir, "corpus")
    rng = random.Random(20240315)
    try:
        if os.path.isdir(corpus):
            shutil.rmtree(corpus)
        t0 = time.perf_counter()
        paths = make_corpus(corpus, args.files)
        size = sum(os.path.getsize(p) for p in paths)
        print(f"corpus: {len(paths):,} files, {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s ({corpus})",
              file=sys.stderr)
        n_changed = max(1, round(args.files * args.changed_fraction))
        samples: dict[str, list[float]] = {"full": [], "unchanged": [], "changed_1pct": []}
        for r in range(args.runs):
            output = os.path.join(workdir, f"catalog_{r}")
            shutil.rmtree(output, ignore_errors=True)
            wall, m = metaextract(corpus, output)
            check(m, args.files, args.files, 0, 0, "full")
            samples["full"].append(wall)
            wall, m = metaextract(corpus, output)
            check(m, args.files, 0, 0, args.files, "unchanged")
            samples["unchanged"].append(wall)
            change(paths, n_changed, rng)
            wall, m = metaextract(corpus, output)
            check(m, args.files, 0, n_changed, args.files - n_changed, "1% changed")
            samples["changed_1pct"].append(wall)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in samples.items()), file=sys.stderr)
            if not args.keep:
                shutil.rmtree(output, ignore_errors=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(corpus, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for key, label in [("full", "full run (fresh catalog)"), ("unchanged", "re-run, nothing changed"),
                       ("changed_1pct", f"re-run, {n_changed:,} files ({args.changed_fraction:.0%}) changed")]:
        ratio = medians["full"] / medians[key]
        target = TARGETS.get(key)
        rows.append({"run": key, "label": label, "median_s": round(medians[key], 2),
                     "samples_s": [round(s, 2) for s in samples[key]], "speedup": round(ratio, 1),
                     "target": target, "pass": None if target is None else ratio >= target})
    print(f"\n{args.files:,} files, median of {args.runs} runs each (alternated), "
          f"{machine()['cores']} cores\n")
    print("| run | wall (s) | speed-up vs full | target | result |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        target = f">= {row['target']:g}x" if row["target"] else ""
        verdict = "" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")
        print(f"| {row['label']} | {row['median_s']:.1f} | {row['speedup']:.1f}x | {target} | {verdict} |")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"files": args.files, "changed": n_changed, "runs": args.runs, "corpus_bytes": size,
              "results": rows, "machine": machine(),
              "children_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "children_max_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    os.makedirs(os.path.dirname(args.output_json), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.output_json}", file=sys.stderr)
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
