"""Incremental runs: the previous catalog as cache, change labels, safe publishing, alerting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import make_sample_data
from tests.catalog_helpers import read_table, run_catalog
from transforms import schemas
from transforms.publish import JOURNAL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = list(schemas.TABLES) + list(getattr(schemas, "ROLLUP_TABLES", {}))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, writer in [
        ("dicom", make_sample_data.write_dicom),
        ("fits", make_sample_data.write_fits),
        ("hdf5", make_sample_data.write_hdf5),
        ("netcdf", make_sample_data.write_netcdf),
        ("other", make_sample_data.write_broken),
    ]:
        (root / name).mkdir(parents=True)
        writer(str(root / name))
    return root


def rows(out, table, drop=()):
    got = [{k: v for k, v in r.items() if k not in drop} for r in read_table(out, table).to_pylist()]
    return sorted(got, key=lambda r: json.dumps(r, default=str, sort_keys=True))


def by_name(out):
    return {os.path.basename(r["path"]): r for r in read_table(out, "files").to_pylist()}


def test_unchanged_rerun_carries_every_row_forward(corpus, tmp_path):
    out = tmp_path / "out"
    first = run_catalog([corpus], out)
    before = {t: rows(out, t) for t in TABLES}
    second = run_catalog([corpus], out)
    assert second["pipeline"].startswith("skipped")  # nothing to read: no Beam pipeline at all
    assert second["changes"] == {"new": 0, "changed": 0, "unchanged": 8, "deleted": 0}
    assert second["files_extracted"] == 0 and second["files_carried_forward"] == 8
    for table in TABLES:
        if table == "files":
            continue
        assert rows(out, table) == before[table], table
    # files rows: identical but for change (extracted_at and first_seen stay)
    assert rows(out, "files", drop=("change",)) == [
        {k: v for k, v in r.items() if k != "change"} for r in before["files"]
    ]
    assert {r["change"] for r in read_table(out, "files").to_pylist()} == {"unchanged"}
    assert second["compared_with_previous"]["files_total"] == {"previous": 8, "current": 8, "delta": 0}
    assert first["changes"]["new"] == 8


def test_new_changed_and_deleted_files(corpus, tmp_path):
    out = tmp_path / "out"
    run_catalog([corpus], out)
    old = by_name(out)
    (corpus / "other" / "notes.txt").write_text("now a longer text, so the size changes\n")
    os.remove(corpus / "dicom" / "mr_brain_implicit.dcm")
    shutil.copy(corpus / "fits" / "m31_sample.fits", corpus / "fits" / "copy.fits")
    manifest = run_catalog([corpus], out)
    now = by_name(out)
    assert manifest["changes"] == {"new": 1, "changed": 1, "unchanged": 6, "deleted": 1}
    assert now["notes.txt"]["change"] == "changed"
    assert now["notes.txt"]["first_seen"] == old["notes.txt"]["first_seen"]
    assert now["notes.txt"]["extracted_at"] > old["notes.txt"]["extracted_at"]
    assert now["copy.fits"]["change"] == "new"
    assert "mr_brain_implicit.dcm" not in now
    assert not [r for r in read_table(out, "dicom").to_pylist() if r["path"].endswith("mr_brain_implicit.dcm")]
    assert now["ct_chest.dcm"]["extracted_at"] == old["ct_chest.dcm"]["extracted_at"]
    # same catalog as a fresh full run, but for extracted_at, first_seen and change
    fresh = tmp_path / "fresh"
    run_catalog([corpus], fresh)
    volatile = ("extracted_at", "first_seen", "change", "extract_seconds")
    for table in TABLES:
        assert rows(out, table, volatile) == rows(fresh, table, volatile), table


def test_full_reextracts_but_keeps_labels_and_first_seen(corpus, tmp_path):
    out = tmp_path / "out"
    run_catalog([corpus], out)
    old = by_name(out)
    manifest = run_catalog([corpus], out, "--full")
    now = by_name(out)
    assert manifest["files_extracted"] == 8
    assert manifest["changes"]["unchanged"] == 8
    for name, row in now.items():
        assert row["change"] == "unchanged"
        assert row["first_seen"] == old[name]["first_seen"]
        assert row["extracted_at"] > old[name]["extracted_at"]


def test_retry_errors_and_version_upgrade(corpus, tmp_path):
    out = tmp_path / "out"
    run_catalog([corpus], out)
    assert run_catalog([corpus], out, "--retry_errors")["files_extracted"] == 1  # the truncated HDF5
    # a catalog written by another extractor version is refreshed
    part = sorted((out / "files").glob("*.parquet"))
    for p in part:
        t = pq.read_table(p)
        idx = t.schema.get_field_index("extractor_version")
        t = t.set_column(idx, "extractor_version", pa.array(["0.0.1"] * t.num_rows, pa.string()))
        pq.write_table(t, p)
    manifest = run_catalog([corpus], out)
    assert manifest["files_extracted"] == 8 and manifest["changes"]["unchanged"] == 8


def test_previous_flag_and_bad_previous(corpus, tmp_path):
    base = tmp_path / "base"
    run_catalog([corpus], base)
    manifest = run_catalog([corpus], tmp_path / "other", "--previous", str(base))
    assert manifest["files_carried_forward"] == 8
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.catalog", "--input", str(corpus), "--output", str(tmp_path / "x"),
         "--previous", str(tmp_path / "nothing")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 2 and "is not a metaextract catalog" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_max_error_fraction_exit_code_3(corpus, tmp_path):
    def cli(*extra):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.catalog", "--input", str(corpus), "--output", str(tmp_path / "o"),
             "--progress", "off", *extra],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )

    failing = cli("--max_error_fraction", "0.05")  # 1 error of 8 read
    assert failing.returncode == 3, failing.stderr
    assert "alert" in failing.stderr
    assert (tmp_path / "o" / "manifest.json").exists()  # published all the same
    assert cli("--max_error_fraction", "0.5", "--full").returncode == 0
    bad = cli("--max_error_fraction", "2")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


def _catalog_state(out):
    """(manifest run id, rows per table) after checking the catalog is complete and consistent."""
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {}
    for table in TABLES:
        counts[table] = pq.read_table(out / table).num_rows
        listed = manifest["table_files"][table]
        assert sorted(p.name for p in (out / table).glob("*.parquet")) == sorted(listed), table
        assert counts[table] == manifest["rows"][table], table
    return manifest["run_id"], counts


def _big_corpus(corpus, copies=40):
    """Adds 2 x ``copies`` files (copies of the originals only, never of copies)."""
    originals = [corpus / "fits" / "m31_sample.fits", corpus / "hdf5" / "nexus_scan.h5"]
    for i in range(copies):
        for src in originals:
            shutil.copy(src, src.parent / f"copy{i}-{src.name}")


@pytest.mark.parametrize("delay", [0.5, 2.5])
def test_sigkill_mid_run_leaves_the_previous_catalog_intact(corpus, tmp_path, delay):
    out = tmp_path / "out"
    run_catalog([corpus], out)
    before = _catalog_state(out)
    _big_corpus(corpus)
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.catalog", "--input", str(corpus), "--output", str(out), "--full"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # never half-written: the old catalog, or (if the run got to publish) the new one
    if not (out / JOURNAL).exists():
        state = _catalog_state(out)
        assert state == before or state[1]["files"] == 8 + 80
    # and usable as the next run's cache (a pending publication is rolled forward first)
    manifest = run_catalog([corpus], out)
    assert manifest["files_total"] == 8 + 80
    _catalog_state(out)
    assert not list(out.glob(".metaextract-staging-*"))


def test_crash_during_publish_is_rolled_forward(corpus, tmp_path):
    out = tmp_path / "out"
    run_catalog([corpus], out)
    (corpus / "fits" / "extra.fits").write_bytes((corpus / "fits" / "m31_sample.fits").read_bytes())
    env = {**os.environ, "PYTHONPATH": REPO, "METAEXTRACT_TEST_CRASH_DURING_PUBLISH": "1"}
    crashed = subprocess.run(
        [sys.executable, "-m", "pipelines.catalog", "--input", str(corpus), "--output", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert crashed.returncode != 0
    assert (out / JOURNAL).exists()
    assert _catalog_state(out)[1]["files"] == 8  # still the old catalog
    manifest = run_catalog([corpus], out)
    assert not (out / JOURNAL).exists()
    assert manifest["files_total"] == 9 and manifest["changes"]["unchanged"] == 9
    _catalog_state(out)


def test_cache_part_is_a_compact_side_input(corpus, tmp_path):
    """CachePart: a mapping of the previous files rows, pickled as Arrow columns (not its index),
    weighed by the runner's side-input cache through those columns."""
    import pickle

    from apache_beam.runners.worker import statecache

    from transforms.incremental import CachePart, cache_part, table_files

    out = tmp_path / "out"
    run_catalog([corpus], out)
    [path] = table_files(str(out), "files")
    part = CachePart.read(path)
    plain = cache_part(path)
    assert len(part) == len(plain) == 8
    some = next(iter(plain))
    assert part[some] == part.get(some) == plain[some] and some in part and "/nowhere" not in part
    assert part.get("/nowhere") is None and part[some].format in {"dicom", "fits", "hdf5", "netcdf", "unknown"}
    copy = pickle.loads(pickle.dumps(part))
    assert copy._index is None and {p: copy[p] for p in plain} == plain
    assert statecache.get_deep_size([part]) < 64 * 1024  # the columns, not a walk of the index


def test_whole_files_never_split_a_files_rows():
    from transforms.incremental import _whole_files

    rows = [{"path": p} for p in "aaabccccd"]
    pieces = list(_whole_files(rows, 2))
    assert [[r["path"] for r in piece] for piece in pieces] == [list("aaa"), list("bcccc"), ["d"]]
    assert sum(pieces, []) == rows


@pytest.mark.parametrize("timeout_s", [0.0, 60.0])
def test_carried_shards_roll_up_alike_here_and_in_the_extraction_process(corpus, tmp_path, timeout_s):
    """RollUpCarriedShardsFn: the partials of a shard, computed in the extraction process (or
    here, with no isolation) equal carried_partials computed in this process."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.extract import ExtractOptions
    from transforms.incremental import CachePart, RollUpCarriedShardsFn, carried_partials, table_files

    out = tmp_path / "out"
    run_catalog([corpus], out)
    cache = [CachePart.read(p) for p in table_files(str(out), "files")]
    shards = [{"table": t, "path": p} for t in ("dicom", "netcdf", "hdf5", "fits") for p in table_files(str(out), t)]
    expected = [p for shard in shards for p in carried_partials(shard, cache)]
    assert {kind for kind, _, _ in expected} == {"dicom_series", "variables"}
    with beam.Pipeline() as p:
        got = (
            p
            | beam.Create(shards)
            | beam.ParDo(RollUpCarriedShardsFn(ExtractOptions(file_timeout_s=timeout_s)), cache)
        )
        assert_that(got | beam.Map(_partial_row), equal_to([_partial_row(e) for e in expected]))


def _partial_row(partial) -> str:
    """A partial roll-up as the row it would make (sets in a canonical order)."""
    from transforms import rollups

    kind, key, value = partial
    row = rollups.series_row(key, value) if kind == "dicom_series" else rollups.variable_row(key, value)
    return json.dumps(row, default=str, sort_keys=True)


def test_the_progress_of_an_incremental_run_counts_the_files_it_reads(corpus, tmp_path):
    """Carried-forward files are not read: the progress line's total is the files this run
    reads, and it ends at 100% (it stopped at 1/8 with one changed file of eight)."""
    import io

    from pipelines.catalog import run
    from tests.catalog_helpers import TEST_BUDGET

    out = tmp_path / "out"
    run_catalog([corpus], out)
    (corpus / "other" / "notes.txt").write_text("now a longer text, so the size changes\n")
    stderr = io.StringIO()
    run(["--input", str(corpus), "--output", str(out), "--progress", "on", *TEST_BUDGET], stdout=io.StringIO(), stderr=stderr)
    lines = [line for line in stderr.getvalue().replace("\r", "\n").splitlines() if " files (" in line]
    assert lines and lines[-1].startswith("1/1 files (100%)"), lines


def test_a_damaged_previous_catalog_is_a_clear_error_or_ignored(corpus, tmp_path, caplog):
    """The catalog at --output with a manifest that does not parse: a warning, every file read
    again, the catalog replaced (was a traceback on every run, --full included). --previous
    naming a catalog whose files/ part is missing or not Parquet: a one-line UsageError."""
    from pipelines.options import UsageError

    out = tmp_path / "out"
    run_catalog([corpus], out)
    good = tmp_path / "good"
    shutil.copytree(out, good)
    (out / "manifest.json").write_text("{not json")
    manifest = run_catalog([corpus], out)
    assert manifest["changes"]["new"] == manifest["files_total"] and "cannot serve as the cache" in caplog.text
    assert json.loads((out / "manifest.json").read_text())["files_total"] == manifest["files_total"]
    for damage in ("missing", "garbage"):
        broken = tmp_path / f"broken-{damage}"
        shutil.copytree(good, broken)
        (part,) = (broken / "files").glob("*.parquet")
        if damage == "missing":
            part.unlink()
        else:
            part.write_bytes(b"not parquet at all")
        with pytest.raises(UsageError, match="cannot serve as the cache"):
            run_catalog([corpus], tmp_path / f"out-{damage}", "--previous", str(broken))


def test_a_cut_short_part_of_a_format_table_is_not_used_as_the_cache(corpus, tmp_path, caplog):
    """A dicom/ part cut short at --output: a warning and a full run that replaces the catalog
    (every later run, --full included, failed with pyarrow's ArrowInvalid traceback)."""
    out = tmp_path / "out"
    first = run_catalog([corpus], out)
    (part,) = (out / "dicom").glob("*.parquet")
    part.write_bytes(part.read_bytes()[:-100])
    manifest = run_catalog([corpus], out)
    assert "dicom/" in caplog.text and "cannot serve as the cache" in caplog.text
    assert manifest["changes"]["new"] == manifest["files_total"] == first["files_total"]
    assert read_table(out, "dicom").num_rows == read_table(tmp_path / "out", "dicom").num_rows > 0
    manifest = run_catalog([corpus], out)  # and the run after it is incremental again
    assert manifest["changes"]["unchanged"] == manifest["files_total"]


def test_an_output_inside_an_input_does_not_catalog_itself(corpus, tmp_path):
    """--output inside --input: the catalog's own files are not listed (a manifest-recorded
    skip), so a quiet re-run finds nothing new (it saw its own renamed Parquet parts as new,
    changed and deleted files on every run)."""
    out = corpus / "catalog"
    first = run_catalog([corpus], out)
    second = run_catalog([corpus], out)
    assert second["files_total"] == first["files_total"] == len([p for p in corpus.rglob("*") if p.is_file() and out not in p.parents])
    assert second["changes"] == {"new": 0, "changed": 0, "unchanged": first["files_total"], "deleted": 0}
    assert not any(str(out) in p for p in read_table(out, "files").column("path").to_pylist())
    assert "--output" in json.dumps(second["listing_skipped"])


def test_an_output_reached_through_a_symlinked_input_does_not_catalog_itself(corpus, tmp_path):
    """--input a symlink to the folder that holds --output: the output's files are listed under
    the link's name, and were catalogued (new, changed and deleted on every run)."""
    link = tmp_path / "link"
    link.symlink_to(corpus, target_is_directory=True)
    out = corpus / "catalog"
    first = run_catalog([link], out)
    second = run_catalog([link], out)
    assert second["changes"] == {"new": 0, "changed": 0, "unchanged": first["files_total"], "deleted": 0}
    assert not any("/catalog/" in p for p in read_table(out, "files").column("path").to_pylist())
    assert "--output" in json.dumps(second["listing_skipped"])


def test_a_folder_that_cannot_be_listed_one_night_keeps_its_files(corpus, tmp_path, monkeypatch):
    """A sub-folder that cannot be listed (a permission denied for one night) is no evidence
    that its files were deleted: their rows are kept as they were (counted unchanged, the
    manifest's carried_unlisted says how many), and the next night is a normal run (they were
    dropped as deleted, then came back as new with a new first_seen)."""
    import os as os_module

    out = tmp_path / "out"
    first = run_catalog([corpus], out)
    before = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    dicom_rows = read_table(out, "dicom").num_rows
    hidden = str(corpus / "dicom")
    real_scandir = os_module.scandir

    def scandir(path="."):
        if isinstance(path, (str, os_module.PathLike)) and os_module.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", hidden)
        return real_scandir(path)

    changed = next((corpus / "netcdf").iterdir())
    os_module.utime(changed, (1e9, 1e9))  # one changed file elsewhere: the pipeline runs
    monkeypatch.setattr(os_module, "scandir", scandir)
    second = run_catalog([corpus], out)
    monkeypatch.setattr(os_module, "scandir", real_scandir)
    assert second["carried_unlisted"] == len([p for p in before if p.startswith(hidden + "/")]) > 0
    assert second["changes"] == {"new": 0, "changed": 1, "unchanged": first["files_total"] - 1, "deleted": 0}
    assert "folder not listed" in json.dumps(second["listing_skipped"])
    after = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert after.keys() == before.keys()
    assert all(after[p]["first_seen"] == before[p]["first_seen"] for p in before)
    assert read_table(out, "dicom").num_rows == dicom_rows > 0
    third = run_catalog([corpus], out)
    assert "carried_unlisted" not in third and third["changes"]["unchanged"] == first["files_total"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(corpus, tmp_path):
    """Two runs on one local --output: the second stops with one line and exit code 2 (one
    used to publish over the other and remove its staging folder); after the first, runs go on."""
    import fcntl

    from pipelines.catalog import LOCK_FILE
    from pipelines.options import UsageError

    out = tmp_path / "out"
    run_catalog([corpus], out)
    with open(out / LOCK_FILE, "a") as held:  # a run in progress holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another metaextract run is writing the catalog"):
            run_catalog([corpus], out)
    manifest = run_catalog([corpus], out)
    assert manifest["changes"]["unchanged"] == manifest["files_total"]
    assert not any(LOCK_FILE in p for p in read_table(out, "files").column("path").to_pylist())


def test_bulk_data_threshold_reaches_the_dicom_extractor_and_is_recorded(corpus, tmp_path):
    """--bulk_data_threshold was accepted and written to the manifest but never reached the
    extractor (1024 always). It changes DICOM rows, so a value other than the default is in
    files.settings and changing it re-extracts."""
    out = tmp_path / "out"
    run_catalog([corpus], out, "--checksum", "none")
    default = {r["path"]: r for r in read_table(out, "dicom").to_pylist()}
    before = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert all("bulk_data_threshold" not in r["settings"] for r in before.values())
    run_catalog([corpus], out, "--checksum", "none", "--bulk_data_threshold", "0")
    zero = {r["path"]: r for r in read_table(out, "dicom").to_pylist()}
    files = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert all(files[p]["extracted_at"] > before[p]["extracted_at"] for p in files)  # every file re-read
    for path, row in zero.items():
        assert json.loads(files[path]["metadata"])["bulk_threshold"] == 0
        assert json.loads(files[path]["settings"])["bulk_data_threshold"] == 0
        assert set(json.loads(row["tags"])) < set(json.loads(default[path]["tags"]))  # (0002,0001) OB, ...


def test_an_output_that_cannot_be_locked_is_a_warning_or_one_line(corpus, tmp_path, monkeypatch, caplog):
    """A file system without locks (flock: ENOLCK on some NFS/CIFS/FUSE mounts): a warning, the
    run goes on; a lock file that cannot be opened at all: one line, exit 2 (both escaped as
    tracebacks)."""
    import errno
    import fcntl

    from pipelines.options import UsageError

    out = tmp_path / "out"

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    manifest = run_catalog([corpus], out)
    assert manifest["files_total"] > 0 and "cannot be locked" in caplog.text
    monkeypatch.undo()
    (out / ".metaextract-lock").unlink()
    (out / ".metaextract-lock").mkdir()  # cannot be opened as a file
    with pytest.raises(UsageError, match="cannot lock --output"):
        run_catalog([corpus], out)
