"""ListFiles: paths, folders, globs and URLs; one record per distinct file."""

from __future__ import annotations

import os

import apache_beam as beam
import fsspec
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.listing import InputError, ListFiles, list_input, list_inputs


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


def test_special_files_are_not_listed(tree):
    os.mkfifo(tree / "a" / "fifo")
    assert str(tree / "a" / "fifo") not in paths(list_input(str(tree)))


def test_json_of_numpy_values():
    import numpy as np

    from transforms.formats.base import dumps

    assert dumps({"a": np.longdouble(1.5), "b": np.array([np.longdouble("nan")]), "c": np.arange(2)}) == (
        '{"a":1.5,"b":["NaN"],"c":[0,1]}'
    )
