"""ListFiles: paths, folders, globs and URLs; one record per distinct file."""

from __future__ import annotations

import os

import apache_beam as beam
import fsspec
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.formats.base import openable
from transforms.listing import InputError, ListFiles, Skipped, list_input, list_inputs


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.fits").write_bytes(b"x" * 10)
    (tmp_path / "a" / "one.h5").write_bytes(b"y" * 20)
    (tmp_path / "a" / "b" / "deep.fits").write_bytes(b"z" * 30)
    return tmp_path


def paths(infos):
    return sorted(i.path for i in infos)


def test_folder_is_walked_recursively_with_listing_sizes(tree):
    infos = list(list_input(str(tree)))
    assert paths(infos) == sorted(
        str(tree / p) for p in ("top.fits", "a/one.h5", "a/b/deep.fits")
    )
    assert {os.path.basename(i.path): i.size for i in infos} == {"top.fits": 10, "one.h5": 20, "deep.fits": 30}
    assert all(i.modified is not None and i.modified.tzinfo is not None for i in infos)


def test_glob_with_double_star_and_file_url(tree):
    assert paths(list_input(str(tree / "**" / "*.fits"))) == sorted(
        [str(tree / "top.fits"), str(tree / "a/b/deep.fits")]
    )
    assert paths(list_input(f"file://{tree}/a/one.h5")) == [str(tree / "a/one.h5")]


def test_relative_paths_become_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert paths(list_input("a/one.h5")) == [str(tree / "a/one.h5")]


def test_memory_url_keeps_the_scheme():
    fs = fsspec.filesystem("memory")
    fs.pipe("/listing-test/x.nc", b"CDF\x01")
    try:
        infos = list(list_input("memory://listing-test"))
        assert [(i.path, i.size) for i in infos] == [("memory:///listing-test/x.nc", 4)]
    finally:
        fs.rm("/listing-test", recursive=True)


@pytest.mark.parametrize("spec", ["does/not/exist", "*.nothing-matches-this"])
def test_missing_input_is_a_clear_error(tree, monkeypatch, spec):
    monkeypatch.chdir(tree)
    with pytest.raises(InputError, match="does not exist or matches no file"):
        list_inputs([spec])


def test_list_inputs_counts_distinct_files(tree):
    listed = list_inputs([str(tree), str(tree / "a"), str(tree / "top.fits")])
    assert (len(listed), sum(i.size for i in listed.values())) == (3, 60)


def test_overlapping_inputs_list_each_file_once(tree, pipeline):
    with pipeline as p:
        listed = p | ListFiles([str(tree), str(tree / "a"), f"file://{tree}/top.fits"]) | beam.Map(lambda i: i.path)
        assert_that(
            listed, equal_to([str(tree / p) for p in ("top.fits", "a/one.h5", "a/b/deep.fits")])
        )




def test_json_of_numpy_values():
    import numpy as np

    from transforms.formats.base import dumps

    assert dumps({"a": np.longdouble(1.5), "b": np.array([np.longdouble("nan")]), "c": np.arange(2)}) == (
        '{"a":1.5,"b":["NaN"],"c":[0,1]}'
    )


# --- hostile trees (issue 5): special files, symlinks, names, permissions, vanished files -------

NON_UTF8 = os.fsdecode(b"caf\xe9.dcm")  # Latin-1 bytes: not UTF-8
as_root = os.geteuid() == 0


def detect_guarded(info):
    """detect() in a thread, so that a regression (opening a FIFO blocks) fails instead of hanging."""
    import threading

    from transforms.detect import detect

    result = []
    worker = threading.Thread(target=lambda: result.append(detect(info)), daemon=True)
    worker.start()
    worker.join(60)
    assert result, "detect() blocked on a file it must never open"
    return result[0]


def by_name(infos):
    return {os.path.basename(i.path): i for i in infos}


def test_special_files_are_listed_and_never_opened(tree):
    import socket

    os.mkfifo(tree / "a" / "fifo")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tree / "a" / "sock"))
        infos = by_name(list_input(str(tree)))
    assert {n: (i.kind, i.size) for n, i in infos.items() if i.kind != "file"} == {
        "fifo": ("fifo", 0), "sock": ("socket", 0)
    }
    assert detect_guarded(infos["fifo"]).error == "NotARegularFileError: fifo, not a regular file (never opened)"
    assert detect_guarded(infos["sock"]).error.startswith("NotARegularFileError: socket")
    (device,) = list_input("/dev/null")  # an input naming a device is listed, not opened
    assert (device.kind, detect_guarded(device).format) == ("character device", "unknown")


def test_a_file_replaced_by_a_fifo_after_listing_is_not_opened(tree):
    (info,) = list_input(str(tree / "top.fits"))
    os.remove(tree / "top.fits")
    os.mkfifo(tree / "top.fits")
    assert detect_guarded(info).error.startswith("NotARegularFileError")


def test_symlinks_by_default_files_listed_folders_reported_not_entered(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "far.fits").write_bytes(b"f" * 5)
    os.symlink(outside, tree / "linked_dir")
    os.symlink(tree, tree / "a" / "loop")
    os.symlink(tree / "top.fits", tree / "alias.fits")
    os.symlink(tree / "nowhere", tree / "broken")
    skipped: list[Skipped] = []
    infos = by_name(list_input(str(tree), skipped=skipped))
    assert set(infos) == {"top.fits", "one.h5", "deep.fits", "alias.fits", "broken"}
    assert (infos["alias.fits"].path, infos["alias.fits"].size) == (str(tree / "alias.fits"), 10)
    assert (infos["broken"].kind, infos["broken"].size) == ("broken symlink", 0)
    assert detect_guarded(infos["broken"]).error.startswith("FileNotFoundError: broken symbolic link")
    assert sorted((s.path, s.reason.split(",")[0]) for s in skipped) == [
        (str(tree / "a" / "loop"), "symlink to a folder"),
        (str(tree / "linked_dir"), "symlink to a folder"),
    ]
    # the input itself may be a symlink to a folder: it is entered
    os.symlink(tree / "a", tree / "input_link")
    assert paths(list_input(str(tree / "input_link"))) == [str(tree / "input_link/b/deep.fits"), str(tree / "input_link/one.h5")]


def test_follow_symlinks_enters_each_real_folder_once(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "far.fits").write_bytes(b"f" * 5)
    os.symlink(outside, tree / "linked_dir")
    os.symlink(outside, tree / "a" / "second_link")  # the same folder again
    os.symlink(tree, tree / "a" / "b" / "loop_to_top")  # a loop
    os.symlink(tree / "a", tree / "0_link_before_real")  # sorts before "a": real paths still win
    os.symlink(outside / "self", outside / "self")  # a symlink to itself (ELOOP): a broken link
    skipped: list[Skipped] = []
    listed = paths(list_input(str(tree), follow_symlinks=True, skipped=skipped))
    assert listed == sorted(
        [str(tree / p) for p in ("top.fits", "a/one.h5", "a/b/deep.fits")]
        + [str(tree / "a/second_link/far.fits"), str(tree / "a/second_link/self")]
    ) or listed == sorted(
        [str(tree / p) for p in ("top.fits", "a/one.h5", "a/b/deep.fits")]
        + [str(tree / "linked_dir/far.fits"), str(tree / "linked_dir/self")]
    )
    assert len(skipped) == 3 and all("already listed" in s.reason for s in skipped)


def test_globs_walk_locally_with_the_same_rules(tree):
    os.mkfifo(tree / "a" / "pipe.fits")
    os.symlink(tree / "a", tree / "link")
    (tree / "a" / "b" / "x.fits").mkdir()  # a folder matching the pattern is listed whole
    (tree / "a" / "b" / "x.fits" / "inner.h5").write_bytes(b"i")
    infos = by_name(list_input(str(tree / "**" / "*.fits")))
    assert {n: i.kind for n, i in infos.items()} == {
        "top.fits": "file", "deep.fits": "file", "pipe.fits": "fifo", "inner.h5": "file"
    }
    assert paths(list_input(str(tree / "*" / "one.h5"))) == [str(tree / "a/one.h5")]
    assert paths(list_input(str(tree / "*"))) == paths(list_input(str(tree)))
    assert paths(list_input(str(tree / "a" / "?" / "deep.fits"))) == [str(tree / "a/b/deep.fits")]


def test_non_utf8_names_are_escaped_text_and_opened_by_their_real_name(tree, pipeline):
    real = os.path.join(str(tree), NON_UTF8)
    with open(real, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (info,) = [i for i in list_input(str(tree)) if i.open_path]
    assert (info.path, info.open_path, info.size) == (str(tree / "caf\\xe9.dcm"), f"file://{tree}/caf%E9.dcm", 108)
    assert openable(info.open_path) == real and openable(info.path) == info.path
    assert detect_guarded(info).format == "hdf5"
    with pipeline as p:  # plain UTF-8 text: Beam's coders and pyarrow take it
        listed = p | ListFiles([str(tree)]) | beam.Map(lambda i: (i.path, i.open_path))
        assert_that(listed, equal_to(
            [(str(tree / n), None) for n in ("top.fits", "a/one.h5", "a/b/deep.fits")]
            + [(info.path, info.open_path)]
        ))


def test_an_escaped_name_colliding_with_a_real_one_is_reported(tree):
    with open(os.path.join(str(tree), NON_UTF8), "wb") as f:
        f.write(b"x")
    (tree / "caf\\xe9.dcm").write_bytes(b"y")  # literally backslash-x-e-9
    skipped: list[Skipped] = []
    listed = list_inputs([str(tree)], skipped=skipped)
    assert len(listed) == 4 and [s.reason for s in skipped] == ["another file has the same catalog path (escaped name)"]


def test_a_file_vanished_after_listing_becomes_an_error_row(tree):
    (info,) = list_input(str(tree / "top.fits"))
    os.remove(tree / "top.fits")
    detected = detect_guarded(info)
    assert (detected.format, detected.error.split(":")[0]) == ("unknown", "FileNotFoundError")


UNREADABLE_CHECK = """
import os, sys
from transforms.detect import detect
from transforms.listing import InputError, list_inputs
tree = sys.argv[1]
skipped = []
listed = list_inputs([tree], skipped=skipped)
assert sorted(os.path.basename(p) for p in listed) == ["one.h5", "top.fits"], listed
assert [(s.path, s.reason.split(": ")[:2]) for s in skipped] == [
    (os.path.join(tree, "a", "b"), ["folder not listed", "PermissionError"])
], skipped
assert detect(listed[os.path.join(tree, "top.fits")]).error.startswith("PermissionError"), "file"
try:
    list_inputs([os.path.join(tree, "a", "b")])
    raise AssertionError("an unreadable input folder must stop the run")
except InputError as exc:
    assert "PermissionError" in str(exc)
print("ok")
"""


def test_unreadable_file_is_an_error_row_and_unreadable_folder_is_reported(tmp_path_factory):
    """Run as an unprivileged user (root is not denied by chmod 000): as ``nobody`` via setpriv."""
    import shutil
    import subprocess
    import sys
    import tempfile

    command = [sys.executable, "-c", UNREADABLE_CHECK]
    if as_root:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: chmod 000 does not deny root")
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    tree = tempfile.mkdtemp(prefix="metaextract-unreadable-")  # reachable by nobody, unlike tmp_path
    try:
        os.chmod(tree, 0o755)
        os.makedirs(os.path.join(tree, "a", "b"), mode=0o755)
        for name, mode in (("top.fits", 0), ("a/one.h5", 0o644), ("a/b/deep.fits", 0o644)):
            with open(os.path.join(tree, name), "wb") as f:
                f.write(b"SIMPLE  = ")
            os.chmod(os.path.join(tree, name), mode)
        os.chmod(os.path.join(tree, "a", "b"), 0)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(command + [tree], cwd=repo, capture_output=True, text=True, check=False)
        assert done.stdout.strip() == "ok", done.stderr[-3000:]
    finally:
        os.chmod(os.path.join(tree, "a", "b"), 0o755)
        shutil.rmtree(tree)


def test_skipped_entries_are_logged_and_summarised(tree, caplog):
    from transforms.listing import skipped_summary

    for n in range(25):
        os.symlink(tree / "a", tree / f"link{n:02}")
    skipped: list[Skipped] = []
    list_inputs([str(tree)], skipped=skipped)
    assert len(skipped) == 25 and caplog.text.count("not listed:") == 21
    assert "5 more" in caplog.text
    summary = skipped_summary(skipped, limit=2)
    assert summary["count"] == 25 and len(summary["first"]) == 2 and set(summary["first"][0]) == {"path", "reason"}


def test_remote_urls_keep_credentials_out_of_the_path():
    fs = fsspec.filesystem("memory")
    fs.pipe("/listing-secret/x.nc", b"CDF\x01")
    try:
        (info,) = list_input("memory://listing-secret/x.nc")
        assert (info.path, info.open_path) == ("memory:///listing-secret/x.nc", None)
    finally:
        fs.rm("/listing-secret", recursive=True)


# --- end to end through the pipeline -------------------------------------------------------------


@pytest.fixture
def hostile_tree(tmp_path):
    from pipelines import make_sample_data

    root = tmp_path / "in"
    root.mkdir()
    make_sample_data.write_dicom(str(root))
    make_sample_data.write_hdf5(str(root))
    os.rename(root / "ct_chest.dcm", os.path.join(str(root), NON_UTF8))
    os.rename(root / "nexus_scan.h5", os.path.join(str(root), os.fsdecode(b"scan-\xff.h5")))
    os.mkfifo(root / "fifo")
    os.symlink(root, root / "loop")
    os.symlink(root / "nowhere", root / "broken")
    return root


def catalog_rows(root, out, *flags):
    import pyarrow.parquet as pq

    from pipelines.catalog import run
    from tests.catalog_helpers import TEST_BUDGET

    manifest = run(["--input", str(root), "--output", str(out), "--progress", "off", *flags, *TEST_BUDGET])
    rows = pq.read_table(out / "files", columns=["path", "format", "status", "error"]).to_pylist()
    return manifest, {os.path.basename(r["path"]): r for r in rows}


def test_hostile_tree_end_to_end_one_row_per_entry(hostile_tree, tmp_path):
    manifest, rows = catalog_rows(hostile_tree, tmp_path / "out")
    assert set(rows) == {"caf\\xe9.dcm", "scan-\\xff.h5", "mr_brain_implicit.dcm", "fifo", "broken"}
    assert rows["fifo"]["error"] == "NotARegularFileError: fifo, not a regular file (never opened)"
    assert rows["broken"]["error"].startswith("FileNotFoundError: broken symbolic link")
    assert (rows["caf\\xe9.dcm"]["format"], rows["scan-\\xff.h5"]["format"]) == ("dicom", "hdf5")
    assert manifest["listing_skipped"] == {
        "count": 1,
        "first": [{"path": str(hostile_tree / "loop"), "reason": "symlink to a folder, not followed (--follow_symlinks)"}],
    }
    _, again = catalog_rows(hostile_tree, tmp_path / "out2", "--follow_symlinks")
    assert set(again) == set(rows)  # the loop is entered once, and ends


def test_non_utf8_named_files_are_read_end_to_end(hostile_tree, tmp_path):
    _, rows = catalog_rows(hostile_tree, tmp_path / "out")
    assert (rows["caf\\xe9.dcm"]["status"], rows["scan-\\xff.h5"]["status"]) == ("ok", "ok")


def test_file_batches_are_distinct_and_bounded(tree, pipeline):
    """ListFileBatches: every file once across overlapping inputs, batches of at most batch_files."""
    from transforms.listing import FileBatch, ListFileBatches

    with pipeline as p:
        batches = p | ListFileBatches([str(tree), str(tree / "a"), str(tree / "top.fits")], batch_files=2)
        assert_that(batches | "Sizes" >> beam.Map(lambda b: isinstance(b, FileBatch) and 1 <= len(b) <= 2)
                    | "All" >> beam.combiners.ToList() | beam.Map(all), equal_to([True]), label="Bounded")
        paths = batches | beam.FlatMap(lambda b: [i.path for i in b])
        assert_that(paths, equal_to([str(tree / p) for p in ("top.fits", "a/one.h5", "a/b/deep.fits")]), label="Once")


def test_file_batch_pickles_whole():
    import pickle

    from transforms.formats.base import FileInfo
    from transforms.listing import FileBatch, distinct_batches

    batch = FileBatch([FileInfo("/a", 1), FileInfo("/b", 2)])
    copy = pickle.loads(pickle.dumps(batch))
    assert type(copy) is FileBatch and copy == batch
    pieces = [FileBatch([FileInfo("/a", 1), FileInfo("/b", 2)]), FileBatch([FileInfo("/a", 1), FileInfo("/c", 3)])]
    out = list(distinct_batches((0, pieces), batch_files=2))
    assert [[i.path for i in b] for b in out] == [["/a", "/b"], ["/c"]]


def test_the_launchers_listing_is_read_back_one_element_per_batch(tree, tmp_path):
    """ListedFileBatches: the saved listing's batches, one element each (so that workers can
    share them), every file once."""
    from transforms.listing import ListedFileBatches, listing_offsets, read_listing_batch, write_listing

    listed = list(list_inputs([str(tree)]).values())
    saved = str(tmp_path / "listing.pickle")
    write_listing(listed, saved, batch_files=2)
    offsets = listing_offsets(saved)
    assert len(offsets) == (len(listed) + 1) // 2 >= 2
    assert [i.path for o in offsets for i in read_listing_batch(o)] == [i.path for i in listed]
    with beam.Pipeline() as p:
        sizes = p | ListedFileBatches(saved) | beam.Map(len)
        assert_that(sizes, equal_to([len(read_listing_batch(o)) for o in offsets]))


def test_a_listing_for_several_workers_gives_each_worker_an_equal_share_of_every_folder(tmp_path):
    """write_listing(workers=n): batches a multiple of n, file i in batch i % batches, so that
    the runner's round-robin hands each worker the same mix (a path-ordered listing gave one
    worker the DICOM folder and the other the NetCDF one)."""
    from transforms.formats.base import FileInfo
    from transforms.listing import listing_offsets, read_listing_batch, write_listing

    listed = [FileInfo(f"/{kind}/{i:04d}", 1) for kind in ("dicom", "fits", "hdf5", "netcdf") for i in range(500)]
    saved = str(tmp_path / "listing.pickle")
    write_listing(listed, saved, batch_files=1000, workers=2)
    batches = [read_listing_batch(o) for o in listing_offsets(saved)]
    assert len(batches) == 2 and [len(b) for b in batches] == [1000, 1000]
    for batch in batches:
        assert {kind: sum(i.path.startswith(f"/{kind}/") for i in batch) for kind in ("dicom", "fits", "hdf5", "netcdf")} == dict.fromkeys(("dicom", "fits", "hdf5", "netcdf"), 250)
    assert sorted(i.path for b in batches for i in b) == sorted(i.path for i in listed)
    write_listing(listed[:2], saved, batch_files=1000, workers=3)  # fewer files than workers
    assert [len(read_listing_batch(o)) for o in listing_offsets(saved)] == [1, 1]
    write_listing(listed, saved, batch_files=300, workers=4)  # 7 batches needed -> 8
    assert [len(read_listing_batch(o)) for o in listing_offsets(saved)] == [250] * 8
