"""Stress run: metaextract over a tree of mixed valid and adversarial files (issue 5).

    python benchmarks/stress.py [--files 2000] [--data_dir DIR] [--file_timeout_s 10]

Writes (once, cached in ``--data_dir``) a tree of ``--files`` regular files: four fifths valid
files of the four formats (``benchmarks/corpus.py``), one fifth adversarial (every case of
``tests/adversarial.py`` once, then truncations at seeded random offsets and random bytes behind
each format's magic number), one valid file under a name that is not UTF-8, plus entries that
are not regular files: a FIFO, a Unix socket, a character device (when ``mknod`` is allowed), a
folder symlink loop and a pair of file symlinks pointing at each other.

Runs ``metaextract --input TREE --output OUT --file_timeout_s N`` once as a subprocess and
reports: regular files found (an independent ``os.walk``) against rows in ``files/*.parquet``
(every regular file exactly one row; the other entries may be skipped or reported), errors by
type (the ``error`` column's ``Type:`` prefix) and ``error_kind``, peak RSS of the process tree,
wall time, the slowest file (``files.extract_seconds``) and the exit code. Prints a Markdown
table with PASS/FAIL and writes ``benchmarks/results/stress.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import socket
import stat
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for folder in (HERE, REPO):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import bench_large
import bench_speed as speed
import corpus as corpus_mod
from tests import adversarial

DEFAULT_DATA_DIR = os.path.join(HERE, "_corpus", "stress")
GENERATOR_VERSION = 1
SEED = 20260501
NON_UTF8_NAME = b"obs_\xff\xfe_latin1_caf\xe9.fits"
EXTENSIONS = {"dicom": ".dcm", "fits": ".fits", "hdf5": ".h5", "netcdf": ".nc", "": ".bin"}
#: Generators of tests/adversarial.py that accept an offset or a seed: the fill-up cases.
TRUNCATABLE = tuple(adversarial.VALID)
log = speed.log
verdict = speed.verdict


# --- the tree ----------------------------------------------------------------------------------


def adversarial_plan(count: int) -> list[tuple[str, Any]]:
    """``count`` (name, make(path)) pairs: every case of ALL_CASES once, then seeded variations."""
    plan: list[tuple[str, Any]] = list(adversarial.ALL_CASES.items())[:count]
    rng = random.Random(SEED)
    seeds = {fmt: adversarial.valid_bytes(fmt) for fmt in TRUNCATABLE}
    magics = list(adversarial.MAGICS.items())
    while len(plan) < count:
        if len(plan) % 2:
            fmt = rng.choice(TRUNCATABLE)
            offset = rng.randrange(1, len(seeds[fmt]))
            make = _truncated_maker(seeds[fmt], offset)
            plan.append((f"{fmt}_truncated_at_{offset}", make))
        else:
            name, magic = rng.choice(magics)
            seed = rng.randrange(1 << 30)
            plan.append((f"{name}_random_after_magic_seed{seed}", _random_maker(magic, seed, rng.choice((512, 4096, 65536)))))
    return plan


class _truncated_maker:
    """Picklable ``make(path)``: the seed bytes cut at ``offset``."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def __call__(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.data[: self.offset])


class _random_maker:
    """Picklable ``make(path)``: ``magic`` then seeded random bytes."""

    def __init__(self, magic: bytes, seed: int, size: int) -> None:
        self.magic, self.seed, self.size = magic, seed, size

    def __call__(self, path: str) -> None:
        adversarial.make_random_after_magic(path, self.magic, size=self.size, seed=self.seed)


def _write_valid(task: tuple[str, str, int]) -> None:
    path, fmt, index = task
    corpus_mod.WRITERS[fmt](path, index)


def _write_adversarial(task: tuple[str, Any]) -> None:
    path, make = task
    make(path)


def special_entries(tree: str) -> dict[str, str]:
    """Make the entries that are not regular files; their relative path -> what they are."""
    folder = os.path.join(tree, "special")
    os.makedirs(folder, exist_ok=True)
    made = {}
    os.mkfifo(os.path.join(folder, "a.fifo"))
    made["special/a.fifo"] = "FIFO"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(os.path.join(folder, "a.sock"))
    made["special/a.sock"] = "Unix socket (bound, nobody listening)"
    try:
        os.mknod(os.path.join(folder, "zero.dev"), 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
        made["special/zero.dev"] = "character device 1,5 (like /dev/zero: endless reads)"
    except OSError as exc:
        log(f"no device file: mknod refused ({exc})")
    os.makedirs(os.path.join(folder, "loop"), exist_ok=True)
    os.symlink("..", os.path.join(folder, "loop", "up"))
    made["special/loop/up"] = "symlink to its own ancestor folder (loop)"
    os.symlink("ping.lnk", os.path.join(folder, "pong.lnk"))
    os.symlink("pong.lnk", os.path.join(folder, "ping.lnk"))
    made["special/ping.lnk"] = made["special/pong.lnk"] = "file symlinks pointing at each other (ELOOP)"
    return made


def ensure_tree(data_dir: str, files: int) -> dict[str, Any]:
    """Write (or reuse) the tree of ``files`` regular files; its description."""
    tree = os.path.join(data_dir, "tree")
    stamp = os.path.join(data_dir, "tree.json")
    params = {"version": GENERATOR_VERSION, "files": files, "cases": sorted(adversarial.ALL_CASES)}
    if os.path.isdir(tree) and os.path.exists(stamp):
        with open(stamp) as f:
            meta = json.load(f)
        if meta.get("params") == params:
            log(f"tree: reusing {tree}")
            return meta
    shutil.rmtree(tree, ignore_errors=True)
    start = time.perf_counter()
    n_adversarial = files // 5
    n_valid = files - n_adversarial
    valid = []
    for i in range(n_valid):
        fmt = corpus_mod.FORMATS[i % 4]
        index = i // 4
        name = os.path.basename(corpus_mod.file_name(fmt, index))
        valid.append((os.path.join(tree, "valid", fmt, f"batch{index % 10}", name), fmt, index))
    adversarial_tasks = []
    for i, (case, make) in enumerate(adversarial_plan(n_adversarial)):
        ext = EXTENSIONS[adversarial.case_format(case.split("_at_")[0].split("_seed")[0])]
        adversarial_tasks.append((os.path.join(tree, "adversarial", f"group{i % 8}", f"{i:04d}_{case}{ext}"), make))
    for path in {os.path.dirname(p) for p, *_ in valid + adversarial_tasks}:
        os.makedirs(path, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.map(_write_valid, valid, chunksize=8)
        pool.map(_write_adversarial, adversarial_tasks, chunksize=1)
    # one valid file under a name that is not UTF-8
    first_fits = next(p for p, fmt, _ in valid if fmt == "fits")
    os.rename(os.fsencode(first_fits), os.path.join(os.fsencode(os.path.dirname(first_fits)), NON_UTF8_NAME))
    meta = {
        "params": params,
        "tree": tree,
        "valid_files": n_valid,
        "adversarial_files": n_adversarial,
        "adversarial_cases": [os.path.basename(p) for p, _ in adversarial_tasks],
        "special_entries": special_entries(tree),
        "non_utf8_name": os.path.join(os.path.dirname(first_fits), NON_UTF8_NAME.decode("utf-8", "backslashreplace")),
    }
    with open(stamp, "w") as f:
        json.dump(meta, f, indent=2)
    log(f"tree: wrote {files} files in {time.perf_counter() - start:.1f} s ({tree})")
    return meta


def walk_tree(tree: str) -> tuple[set[str], set[str]]:
    """Regular files and other non-folder entries under ``tree`` (``os.walk``, links not followed).

    Paths are text, with bytes that are not UTF-8 written as ``\\xNN``.
    """
    regular, other = set(), set()
    for folder, dirs, names in os.walk(os.fsencode(tree)):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            text = path.decode("utf-8", "backslashreplace")
            (regular if stat.S_ISREG(os.lstat(path).st_mode) else other).add(text)
    return regular, other


# --- the run -------------------------------------------------------------------------------------


def error_type(error: str | None) -> str:
    """The ``Type`` of an ``error`` value ``Type: message``."""
    if not error:
        return "(none)"
    head = error.split(":", 1)[0].strip()
    return head if head and " " not in head else "(no type prefix)"


def analyze(out: str, tree: str) -> dict[str, Any]:
    """Compare the catalog's ``files`` rows with the tree; errors by type, the slowest file."""
    regular, other = walk_tree(tree)
    files = bench_large.read_parquet_dir(os.path.join(out, "files"))
    found: dict[str, Any] = {"regular_files_found": len(regular), "other_entries_found": len(other)}
    if files is None:
        found["rows"] = 0
        return found
    rows = files.to_pylist()
    paths = [str(r["path"]).removeprefix("file://") for r in rows]
    counts = collections.Counter(paths)
    found["rows"] = len(rows)
    found["duplicate_paths"] = sorted(p for p, n in counts.items() if n > 1)[:20]
    found["rows_for_regular_files"] = sum(1 for p in paths if p in regular)
    found["rows_for_other_entries"] = sorted(p.removeprefix(tree + "/") for p in counts if p in other)
    found["regular_files_without_row"] = sorted(p.removeprefix(tree + "/") for p in regular - set(paths))[:20]
    found["rows_matching_nothing"] = sorted(p for p in set(paths) - regular - other)[:20]
    found["status"] = dict(collections.Counter(r["status"] for r in rows))
    errors = [r for r in rows if r["status"] != "ok"]
    found["errors_by_type"] = dict(collections.Counter(error_type(r.get("error")) for r in errors).most_common())
    found["errors_by_kind"] = dict(collections.Counter(str(r.get("error_kind")) for r in errors).most_common())
    found["errors_by_status_type_and_kind"] = {
        f"{s} / {t} / {k}": n
        for (s, t, k), n in collections.Counter((r["status"], error_type(r.get("error")), str(r.get("error_kind"))) for r in errors).most_common()
    }
    found["error_examples"] = {}
    for r in errors:
        found["error_examples"].setdefault(error_type(r.get("error")), f"{r['path'].removeprefix(tree + '/')}: {str(r.get('error'))[:200]}")
    timed = [r for r in rows if r.get("extract_seconds") is not None]
    if timed:
        slow = sorted(timed, key=lambda r: r["extract_seconds"], reverse=True)[:5]
        found["slowest"] = [
            {"path": r["path"].removeprefix(tree + "/"), "extract_seconds": r["extract_seconds"], "status": r["status"], "error": (r.get("error") or "")[:200]}
            for r in slow
        ]
        found["extract_seconds_total"] = sum(r["extract_seconds"] for r in timed)
    found["adversarial_ok"] = sum(1 for r in rows if "/adversarial/" in r["path"] and r["status"] == "ok")
    found["valid_not_ok"] = sorted(
        f"{r['path'].removeprefix(tree + '/')}: {str(r.get('error'))[:160]}" for r in rows if "/valid/" in r["path"] and r["status"] != "ok"
    )[:20]
    found["timeouts"] = sum(1 for r in errors if error_type(r.get("error")) == "TimeoutError")
    return found


def verdicts(res: dict[str, Any], budget_mb: float, file_timeout_s: float) -> dict[str, bool | None]:
    found = res["catalog"]
    special_rows = len(found.get("rows_for_other_entries", []))
    rows_ok = (
        found.get("rows_for_regular_files") == found["regular_files_found"]
        and found.get("rows") == found["regular_files_found"] + special_rows
        and not found.get("duplicate_paths")
    )
    slowest = found.get("slowest", [{}])[0].get("extract_seconds")
    return {
        "rows_equal_files_found": rows_ok,
        "exit_code_0": res["run"]["returncode"] == 0,
        "peak_rss_under_budget": res["run"]["tree_peak_rss_mb"] < budget_mb,
        "slowest_file_bounded": None if slowest is None else slowest <= file_timeout_s + 5,
        "valid_files_ok": not found.get("valid_not_ok"),
    }


def report(res: dict[str, Any]) -> str:
    found, run, v = res["catalog"], res["run"], res["verdicts"]
    tree = res["tree"]
    lines = [
        f"Tree: {tree['valid_files'] + tree['adversarial_files']:,} regular files ({tree['valid_files']:,} valid, "
        f"{tree['adversarial_files']:,} adversarial, one valid file under a non-UTF-8 name) and "
        f"{len(tree['special_entries'])} other entries ({', '.join(sorted(set(tree['special_entries'].values())))}); "
        f"`--file_timeout_s {res['file_timeout_s']:g}`.",
        "",
        "| measure | value | target | result |",
        "|---|---|---|---|",
        f"| regular files found (os.walk) | {found['regular_files_found']:,} | | |",
        f"| rows in `files/*.parquet` (for regular files / for other entries) | {found.get('rows', 0):,} "
        f"({found.get('rows_for_regular_files', 0):,} / {len(found.get('rows_for_other_entries', []))}) | "
        f"one row per regular file; other entries skipped or one row each | {v['rows_equal_files_found']} |",
        f"| exit code | {run['returncode']}{' (killed: run timeout)' if run['timed_out'] else ''} | 0 | {v['exit_code_0']} |",
        f"| wall time | {run['wall_s']:.1f} s ({found['regular_files_found'] / run['wall_s']:.0f} files/s) | | |",
        f"| peak RSS of the process tree (PSS; largest process) | {run['tree_peak_rss_mb']:.0f} MB "
        f"({run['polled_tree_peak_pss_mb']:.0f}; {run['largest_process_rss_mb']:.0f} MB) | "
        f"< {res['budget_mb']:g} MB (`--max_memory_per_worker_mb`) | {v['peak_rss_under_budget']} |",
    ]
    slowest = found.get("slowest")
    if slowest:
        s = slowest[0]
        lines.append(
            f"| slowest file (`extract_seconds`) | {s['extract_seconds']:.2f} s: `{s['path']}` ({s['status']}) | "
            f"<= file_timeout_s + 5 s | {v['slowest_file_bounded']} |"
        )
    else:
        lines.append("| slowest file (`extract_seconds`) | column absent or empty | | n/a |")
    lines.append(f"| valid files not `ok` | {len(found.get('valid_not_ok', []))} | 0 | {v['valid_files_ok']} |")
    lines.append(f"| adversarial files catalogued `ok` | {found.get('adversarial_ok', 0)} | | |")
    lines.append(f"| status counts | {', '.join(f'{k} {n:,}' for k, n in found.get('status', {}).items())} | | |")
    lines.append(f"| timeouts (`TimeoutError`) | {found.get('timeouts', 0)} | | |")
    lines += ["", "| status / error type (`error` prefix) / `error_kind` | files | example |", "|---|---|---|"]
    examples = found.get("error_examples", {})
    for key, n in found.get("errors_by_status_type_and_kind", {}).items():
        example = examples.get(key.split(" / ")[1], "").replace("|", "\\|")
        lines.append(f"| {key} | {n:,} | {example[:140]} |")
    problems = []
    for label, key in (("duplicate paths", "duplicate_paths"), ("regular files without a row", "regular_files_without_row"),
                       ("rows matching no entry of the tree", "rows_matching_nothing"), ("valid files not ok", "valid_not_ok")):  # fmt: skip
        if found.get(key):
            problems.append(f"- {label}: " + "; ".join(f"`{p}`" for p in found[key][:8]))
    if found.get("rows_for_other_entries"):
        problems.append("- rows for entries that are not regular files: " + ", ".join(f"`{p}`" for p in found["rows_for_other_entries"]))
    if slowest and len(slowest) > 1:
        problems.append("- slowest five: " + "; ".join(f"`{s['path']}` {s['extract_seconds']:.2f} s" for s in slowest))
    if run["returncode"] != 0:
        problems.append("- last lines of stderr: " + " / ".join(run.get("stderr_tail", [])[-5:]))
    if problems:
        lines += ["", *problems]
    mach = res["machine"]
    lines += [
        "",
        f"Machine: {mach['cpu_model']}, {mach['usable_cpus']} usable CPUs, {mach['ram_gb']} GB RAM; load average "
        f"{mach['load_average_at_start']} at start and {res['load_average_at_end']} at end. metaextract {mach['metaextract']} "
        f"(commit {res['commit']}), {res['date']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="regular files in the tree (default %(default)s)")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="where the tree is written and cached (default %(default)s)")
    parser.add_argument("--file_timeout_s", type=float, default=10.0, help="passed to metaextract (default %(default)s)")
    parser.add_argument("--max_memory_per_worker_mb", type=float, default=500.0, help="the RSS budget checked (metaextract's default, %(default)s)")
    parser.add_argument("--run_timeout_s", type=float, default=3600.0, help="kill the run after this long (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the catalog in DATA_DIR/out")
    parser.add_argument("--output_json", default=os.path.join(speed.RESULTS_DIR, "stress.json"), help="default %(default)s")
    parser.add_argument("extra", nargs="*", help="more metaextract options, after --")
    args = parser.parse_args(argv)
    if args.files < 5:
        parser.error("--files must be >= 5")
    data_dir = os.path.abspath(args.data_dir)
    machine = speed.machine_info()
    meta = ensure_tree(data_dir, args.files)
    out = os.path.join(data_dir, "out") if args.keep else tempfile.mkdtemp(prefix="metaextract-stress-")
    shutil.rmtree(out, ignore_errors=True)
    cmd = speed.metaextract_command() + [
        "--input", meta["tree"], "--output", out, "--file_timeout_s", f"{args.file_timeout_s:g}", *args.extra,
    ]  # fmt: skip
    log(f"running {' '.join(cmd)}")
    run = bench_large.run_tree(cmd, poll_s=0.05, timeout_s=args.run_timeout_s)
    stderr = run.pop("stderr")
    run.pop("stdout")
    run["stderr_tail"] = stderr.strip().splitlines()[-20:]
    log(f"exit {run['returncode']} after {run['wall_s']:.1f} s, peak RSS {run['tree_peak_rss_mb']:.0f} MB")
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": bench_large.git_commit(),
        "command": cmd,
        "file_timeout_s": args.file_timeout_s,
        "budget_mb": args.max_memory_per_worker_mb,
        "machine": machine,
        "tree": meta,
        "run": run,
        "catalog": analyze(out, meta["tree"]),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        res["manifest"] = {k: manifest.get(k) for k in ("files_total", "counts", "skipped", "bytes_read", "read_requests") if k in manifest}
    except OSError as exc:
        res["manifest"] = {"missing": str(exc)}
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    res["verdicts"] = {k: verdict(v) for k, v in verdicts(res, args.max_memory_per_worker_mb, args.file_timeout_s).items()}
    res["markdown"] = report(res)
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print(res["markdown"])
    log(f"results written to {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
