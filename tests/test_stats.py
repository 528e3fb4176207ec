"""Data statistics: exact merging (property tests against numpy) and slab planning."""

from __future__ import annotations

import functools
import math
import random
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from transforms import stats
from transforms.formats.base import ArrayRef
from transforms.stats import Moments, array_stats, iter_slabs, plan_slabs

@pytest.fixture(autouse=True, params=["native", "numpy"])
def kernel(request, monkeypatch):
    """Every test runs with the C kernel and with the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(stats, "_native", None)
    elif stats._native is None:
        if shutil.which("cc") or shutil.which("gcc"):  # the install should have built it
            pytest.fail("transforms._moments was not built although a C compiler is installed")
        pytest.skip("no C compiler: the optional --stats kernel was not built (numpy path tested)")
    return request.param


DTYPES = ["float16", "float32", "float64", ">f8", "int8", "int16", "int32", "int64", "uint8",
          "uint16", "uint32", "uint64", "bool"]


def reference(data: np.ndarray, mask: np.ndarray | None) -> dict:
    """numpy on the whole array: missing = masked or NaN; float64 mean and population std."""
    values = data.reshape(-1) if mask is None else data[~mask]
    missing = 0 if mask is None else int(mask.sum())
    if values.dtype.kind == "f":
        missing += int(np.isnan(values).sum())
        values = values[~np.isnan(values)]
    if not values.size:
        return {"stat_count": 0, "stat_nan_count": missing, "stat_min": None, "stat_max": None,
                "stat_mean": None, "stat_std": None}
    as64 = values.astype(np.float64)
    return {"stat_count": int(values.size), "stat_nan_count": missing,
            "stat_min": float(values.min()), "stat_max": float(values.max()),
            "stat_mean": float(np.nanmean(as64)), "stat_std": float(np.nanstd(as64, ddof=0))}


def assert_close(got: dict, want: dict, scale: float) -> None:
    assert got["stat_count"] == want["stat_count"]
    assert got["stat_nan_count"] == want["stat_nan_count"]
    for key in ("stat_min", "stat_max"):
        assert got[key] == want[key]
    for key in ("stat_mean", "stat_std"):
        if want[key] is None:
            assert got[key] is None
        else:  # 1e-9 relative, to the value or to the data's magnitude when the value is ~0
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9 * scale), key


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    size = draw(st.integers(0, 300))
    if dtype.kind == "f":
        bound = 2.0**100 if dtype.itemsize >= 4 else 2.0**15
        elements = st.just(math.nan) | st.floats(-bound, bound, width=min(64, 8 * dtype.itemsize))
        data = draw(hnp.arrays(dtype, size, elements=elements))
    else:
        data = draw(hnp.arrays(dtype, size))
    mask = draw(st.none() | hnp.arrays(np.bool_, size))
    return data, mask


def partition(rng: random.Random, size: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.randint(0, 8)))) if size > 1 else []
    bounds = [0, *cuts, size]
    return list(zip(bounds[:-1], bounds[1:]))


def merge_randomly(rng: random.Random, parts: list[Moments]) -> Moments:
    parts = list(parts)
    rng.shuffle(parts)
    while len(parts) > 1:  # random merge tree
        i = rng.randrange(len(parts) - 1)
        parts[i:i + 2] = [parts[i].merge(parts[i + 1])]
    return parts[0] if parts else Moments()


@settings(max_examples=400, deadline=None)
@given(arrays(), st.randoms(use_true_random=False), st.sampled_from([(4, 3), (5, 2), (None, None)]))
def test_merged_moments_equal_numpy(array, rng, blocks):
    data, mask = array
    block, row = blocks
    with pytest.MonkeyPatch.context() as mp:
        if block is not None:  # tiny blocks and BLAS rows: every code path on small arrays
            mp.setattr(stats, "BLOCK_ELEMENTS", block)
            mp.setattr(stats, "ROW_ELEMENTS", row)
        parts = []
        for lo, hi in partition(rng, data.size):
            part = data[lo:hi] if mask is None else np.ma.masked_array(data[lo:hi], mask[lo:hi])
            parts.append(Moments.of(part))
        got = merge_randomly(rng, parts).columns()
    finite = data[np.isfinite(data.astype(np.float64))] if data.size else data
    scale = float(np.abs(finite.astype(np.float64)).max()) if finite.size else 1.0
    assert_close(got, reference(data, mask), scale)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint8", "int16", "uint16",
                                   "int32", "uint32", "int64", "bool"])
@pytest.mark.parametrize("size", [1, 255, 256, 257, 1000, 4099])
def test_missing_values_anywhere_in_the_kernel_blocks(dtype, size):
    """NaN and masked values at and around the C kernel's block edges (256 values), every
    supported dtype, against numpy on the whole array."""
    rng = np.random.default_rng(size)
    data = (rng.standard_normal(size) * 50 + 100).astype(dtype)
    for where in ([], [0], [size - 1], [255, 256], list(rng.integers(0, size, 5))):
        where = [w for w in where if w < size]
        mask = np.zeros(size, bool)
        mask[where] = True
        if data.dtype.kind == "f":
            nan_data = data.copy()
            nan_data[where] = np.nan
            assert_close(Moments.of(nan_data).columns(), reference(nan_data, None), 200)
        got = Moments.of(np.ma.masked_array(data, mask)).columns()
        assert_close(got, reference(data, mask), 200)


def test_strided_and_constant_arrays():
    data = np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::3]  # not contiguous
    assert_close(Moments.of(data).columns(), reference(data, None), 40)
    constant = Moments.of(np.full(1000, 7.25)).columns()
    assert (constant["stat_mean"], constant["stat_std"]) == (7.25, 0.0)
    far = np.concatenate([np.full(10, 1e12), np.full(1000, 1.0)])  # shift far from the mean
    assert_close(Moments.of(far).columns(), reference(far, None), 1e12)


def test_large_float32_with_nan_and_offset():
    rng = np.random.default_rng(1)
    data = (rng.standard_normal(1_000_003) * 3 + 1e4).astype(np.float32)
    data[::997] = np.nan
    got = functools.reduce(Moments.merge, (Moments.of(data[i:i + 300_001])
                                           for i in range(0, data.size, 300_001))).columns()
    assert_close(got, reference(data, None), 1e4)


def test_integer_extremes_are_exact():
    data = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], np.int64)
    moments = Moments.of(data)
    assert (moments.min, moments.max) == (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
    assert Moments.of(np.array([2**64 - 1], np.uint64)).max == 2**64 - 1


def test_bool_is_numeric_and_complex_is_not():
    assert Moments.of(np.array([True, False, True])).columns()["stat_mean"] == pytest.approx(2 / 3)
    assert not stats.is_numeric(np.complex64)
    with pytest.raises(TypeError):
        Moments.of(np.array([1j]))
    with pytest.raises(TypeError):
        Moments.of(np.array(["a"]))


def test_infinity_is_a_value():
    columns = Moments.of(np.array([1.0, np.inf, np.nan])).columns()
    assert columns["stat_count"] == 2 and columns["stat_nan_count"] == 1
    assert columns["stat_max"] == math.inf and columns["stat_mean"] == math.inf
    assert math.isnan(columns["stat_std"])
    both = Moments.of(np.array([np.inf])).merge(Moments.of(np.array([-np.inf]))).columns()
    assert math.isnan(both["stat_mean"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("values", [[np.inf, 1, 2, -0.5], [-np.inf, np.nan, 3], [np.inf]])
def test_an_infinite_first_value_gives_an_infinite_mean(values, dtype):
    """The C kernel shifted by the first value: an infinite one made every x - c NaN (mean NaN
    where numpy's is ±inf)."""
    x = np.array(values, dtype)
    columns = Moments.of(x).columns()
    with np.errstate(invalid="ignore"):
        assert columns["stat_mean"] == np.nanmean(x) and math.isinf(columns["stat_mean"])
    assert columns["stat_count"] == np.count_nonzero(~np.isnan(x)) and math.isnan(columns["stat_std"])


def test_empty_all_missing_and_scalars():
    assert Moments.of(np.array([], np.float32)).columns()["stat_mean"] is None
    missing = Moments.of(np.ma.masked_array([1, 2], mask=[True, True])).columns()
    assert missing["stat_count"] == 0 and missing["stat_nan_count"] == 2
    assert missing["stat_min"] is None and missing["stat_std"] is None
    assert Moments.of(np.ma.masked).columns()["stat_nan_count"] == 1
    assert Moments.of(np.float64(3.5)).columns()["stat_max"] == 3.5


# --- slab planning -----------------------------------------------------------------------------


@st.composite
def layouts(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    chunks = draw(st.none() | st.tuples(*[st.integers(1, 9)] * ndim))
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    return shape, chunks, itemsize


def check_plan(shape, chunks, itemsize, slabs, targets):
    covered = np.zeros(shape, np.int64)
    chunk = [max(1, min(c, s)) for c, s in zip(chunks or (1,) * len(shape), shape)]
    for slab in slabs:
        assert len(slab) == len(shape)
        covered[tuple(slice(lo, hi) for lo, hi in slab)] += 1
        for (lo, hi), c, s in zip(slab, chunk, shape):
            assert 0 <= lo < hi <= s
            assert lo % c == 0 and (hi % c == 0 or hi == s)  # whole chunks only
        nbytes = math.prod(hi - lo for lo, hi in slab) * itemsize
        assert nbytes <= max(max(targets), math.prod(chunk) * itemsize)
        if chunks is None and slab:  # contiguous arrays: one byte range per slab
            partial = [i for i, ((lo, hi), s) in enumerate(zip(slab, shape)) if hi - lo != s]
            assert all(hi - lo == 1 for lo, hi in slab[:max(partial, default=0)])
    assert (covered == 1).all()


@settings(max_examples=500, deadline=None)
@given(layouts(), st.integers(1, 3000))
def test_plan_covers_every_element_once_in_whole_chunks(layout, target):
    shape, chunks, itemsize = layout
    slabs = plan_slabs(shape, itemsize, chunks, target)
    check_plan(shape, chunks, itemsize, slabs, [target])
    if not shape:
        assert slabs == [()]


@settings(max_examples=300, deadline=None)
@given(layouts(), st.lists(st.integers(1, 3000), min_size=1, max_size=10))
def test_plan_with_a_changing_target(layout, targets):
    shape, chunks, itemsize = layout
    sizes = iter(targets * 10_000)
    slabs = list(iter_slabs(shape, itemsize, chunks, lambda: next(sizes)))
    check_plan(shape, chunks, itemsize, slabs, targets)


def test_plan_groups_chunks_along_the_slowest_axes():
    assert plan_slabs((100, 100), 4, (10, 100), 8000) == [((lo, lo + 20), (0, 100))
                                                          for lo in range(0, 100, 20)]
    assert plan_slabs((4, 1000), 8, None, 16000) == [((0, 2), (0, 1000)), ((2, 4), (0, 1000))]
    assert plan_slabs((3, 10), 1, None, 4) == [((r, r + 1), (lo, min(lo + 4, 10)))
                                              for r in range(3) for lo in (0, 4, 8)]
    assert plan_slabs((2, 0), 4, None, 10) == []


class ArrayReader:
    def __init__(self, data):
        self.data = data
        self.reads: list = []

    def arrays(self):
        return []

    def read(self, ref, slab):
        self.reads.append(slab)
        return self.data[tuple(slice(lo, hi) for lo, hi in slab)]


def test_array_stats_calls_backpressure_before_every_read():
    data = np.ma.masked_greater(np.arange(60, dtype=np.float32).reshape(6, 10), 50)
    reader = ArrayReader(data)
    ref = ArrayRef(table="t", key=(), shape=(6, 10), itemsize=4, chunks=(2, 5))
    calls = []
    sizes = iter([40, 80, 400] * 10)
    moments = array_stats(reader, ref, lambda: next(sizes), before_read=lambda: calls.append(1))
    assert len(calls) == len(reader.reads) > 1
    assert_close(moments.columns(), reference(data.data, data.mask), 60)


@pytest.mark.parametrize("offset", [0.0, 1e8, -3e6])
def test_missing_values_with_a_large_offset_and_tiny_blocks(monkeypatch, offset):
    rng = np.random.default_rng(5)
    data = rng.standard_normal(5000) * 1e-3 + offset
    data[rng.random(5000) < 0.2] = np.nan
    mask = rng.random(5000) < 0.1
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(stats, "ROW_ELEMENTS", 16)
    got = functools.reduce(Moments.merge, (Moments.of(np.ma.masked_array(data[i:i + 700],
                                                                          mask[i:i + 700]))
                                           for i in range(0, 5000, 700))).columns()
    want = reference(data, mask)
    assert got["stat_std"] == pytest.approx(want["stat_std"], rel=1e-6)
    assert_close(got, want, abs(offset) or 1.0)


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(st.sampled_from([np.float32, np.float64]), st.integers(1, 1200),
                    elements=st.sampled_from([0.0, 1.5, -2.25, 7.0, 1e30, -9999.0, np.nan, np.inf])),
    missing=st.sampled_from([-9999.0, 7.0, 1e30, np.nan, 9.969209968386869e36]),
)
def test_with_missing_equals_the_mask_of_that_value(data, missing):
    """WithMissing (the fill value skipped in the kernel's pass) equals the masked array that
    netCDF4-python's masking makes, NaN counted as missing too; the value compared in the
    values' own type."""
    fill = data.dtype.type(missing)
    masked = np.ma.masked_array(data, data == fill if not np.isnan(fill) else np.isnan(data))
    got = Moments.of(stats.WithMissing(data, float(fill))).columns()
    want = Moments.of(masked).columns()
    assert got["stat_count"] == want["stat_count"] and got["stat_nan_count"] == want["stat_nan_count"]
    for key in ("stat_min", "stat_max", "stat_mean", "stat_std"):
        a, b = got[key], want[key]
        assert (a is None and b is None) or a == b or (math.isnan(a) and math.isnan(b)) or \
            math.isclose(a, b, rel_tol=1e-12), (key, a, b)


@pytest.mark.parametrize("attrs,fast", [
    ({"_FillValue": np.float32(-9999.0)}, True),
    ({"_FillValue": np.float32(np.nan)}, True),
    ({}, True),  # the type's default fill value
    ({"_FillValue": np.float32(-9999.0), "missing_value": np.float32(-9999.0)}, True),
    ({"_FillValue": np.float32(-9999.0), "missing_value": np.float32(np.nan)}, True),
    ({"_FillValue": np.float32(-9999.0), "missing_value": np.float32(-1.0)}, False),
    ({"_FillValue": np.float32(-9999.0), "valid_min": np.float32(0.0)}, False),
    ({"_FillValue": np.float32(-9999.0), "scale_factor": np.float32(2.0)}, False),
])
def test_netcdf_masking_for_statistics_equals_the_masked_values(attrs, fast):
    from transforms.formats.arrays import DEFAULT_FILLVALS, _CFValues

    cf = _CFValues(np.dtype("f4"), attrs, no_fill=False)
    assert (cf.kernel_missing is not None) == fast
    rng = np.random.default_rng(5)
    data = rng.normal(10, 3, 5000).astype("f4")
    data[::7] = -9999.0
    data[::11] = -1.0
    data[::13] = np.nan
    data[::17] = DEFAULT_FILLVALS["f4"]
    got = Moments.of(cf.for_stats(data)).columns()
    want = Moments.of(cf.apply(data)).columns()
    assert got["stat_count"] == want["stat_count"] and got["stat_nan_count"] == want["stat_nan_count"]
    for key in ("stat_min", "stat_max", "stat_mean", "stat_std"):
        assert math.isclose(got[key], want[key], rel_tol=1e-12), key


@pytest.mark.parametrize("native", [True, False])
def test_finite_values_whose_spread_overflows_float64_have_a_finite_mean(monkeypatch, native):
    """[1e308, -1e308, 1e308]: the C kernel's shift by the first value overflows (x - c =
    -2e308); the moments then come from numpy's path, which shifts by the midrange: the mean
    is numpy's, finite, on both paths (and with a fill value to skip)."""
    if not native:
        monkeypatch.setattr(stats, "_native", None)
    values = np.array([1e308, -1e308, 1e308])
    m = stats.Moments.of(values)
    assert m.count == 3 and m.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert m.min == -1e308 and m.max == 1e308
    with_fill = stats.Moments.of(stats.WithMissing(np.array([1e308, -1e308, 7.0, 1e308]), 7.0))
    assert with_fill.count == 3 and with_fill.nan_count == 1 and with_fill.mean == pytest.approx(np.mean(values), rel=1e-12)
