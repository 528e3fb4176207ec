"""Data statistics (``--stats``): moments of numeric arrays computed slab by slab, merged exactly.

Beam-free. :class:`Moments` holds count, missing count, min, max, mean and M2 (sum of squared
deviations) of one part of an array; :meth:`Moments.merge` combines two parts with Chan et al.'s
parallel formula, so the result does not depend on how the array was cut or in which order the
parts are merged (up to float64 rounding, far below 1e-9 relative).

Semantics of :meth:`Moments.of`:

* Numeric dtypes: signed and unsigned integers, floats (float16 ... float64; long double is
  computed in float64) and **bool** (False = 0, True = 1, as numpy's mean does). Complex,
  string, object, structured, datetime: not numeric (``TypeError``).
* Missing: masked elements (``numpy.ma``) and NaN both count in ``nan_count``, never in
  ``count``, min, max, mean or std.
* ``±inf`` are values, as in numpy: min/max may be infinite, the mean becomes ``±inf`` (or NaN
  when both signs occur) and the std NaN.
* ``count``, ``nan_count``, ``min`` and ``max`` are exact (Python ints for integer arrays);
  mean and M2 are float64 (values converted to float64, summed around a shift, see
  :func:`_flat_moments`).

The work is done by a small C kernel (``transforms/_moments.c``, built at install) for the
common dtypes (float32/64, integers up to 64 bits, bool): one pass, vectorized, without the GIL
(threads of one process use several cores). Without it (no compiler at install time, or
``METAEXTRACT_NATIVE_STATS=0``) the same moments come from numpy, about half as fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from transforms.formats.base import ArrayReader, ArrayRef, Slab

#: Elements converted to float64 at a time: 2 MiB of float64 scratch per thread, reused.
BLOCK_ELEMENTS = 256 * 1024

#: Length of the BLAS dot products (OpenBLAS is single-threaded up to 10,000 elements).
ROW_ELEMENTS = 8192

_NUMERIC_KINDS = frozenset("biuf")
_ONES = np.ones(ROW_ELEMENTS)
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0
_scratch = threading.local()

try:
    from transforms import _moments as _native
except ImportError:  # built without a C compiler: numpy computes the same moments
    _native = None
if os.environ.get("METAEXTRACT_NATIVE_STATS", "1") == "0":
    _native = None

#: Buffer formats (numpy dtype chars) the C kernel takes: float32/64, integers up to int64.
_NATIVE_CHARS = frozenset("fdbBhHiIlq")


def is_numeric(dtype: Any) -> bool:
    """True for the dtypes that get statistics: bool, integers and real floats."""
    dtype = np.dtype(dtype)
    return dtype.kind in _NUMERIC_KINDS and dtype.names is None and dtype.subdtype is None


def _buffer() -> np.ndarray:
    """This thread's float64 scratch block (reused: no allocation, no page faults per block)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size != BLOCK_ELEMENTS:
        buf = _scratch.buf = np.empty(BLOCK_ELEMENTS, np.float64)
        _scratch.flags = np.empty(BLOCK_ELEMENTS, np.bool_)
    return buf


@dataclasses.dataclass(frozen=True)
class WithMissing:
    """Float values of which NaN and those equal to ``missing`` (a value of their dtype: a
    fill value) are missing, as a mask of them would say: :meth:`Moments.of` counts them in
    its one pass (the C kernel), without a mask array."""

    values: np.ndarray
    missing: float


@dataclasses.dataclass
class Moments:
    """Moments of the non-missing values of (part of) an array."""

    count: int = 0
    nan_count: int = 0
    min: float | int | None = None
    max: float | int | None = None
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, other: Moments) -> Moments:
        """The moments of both parts together (Chan, Golub & LeVeque's pairwise update)."""
        nan_count = self.nan_count + other.nan_count
        if not other.count:
            return dataclasses.replace(self, nan_count=nan_count)
        if not self.count:
            return dataclasses.replace(other, nan_count=nan_count)
        na, nb = self.count, other.count
        n = na + nb
        delta = other.mean - self.mean
        return Moments(
            count=n,
            nan_count=nan_count,
            min=_nanless_min(self.min, other.min),
            max=_nanless_max(self.max, other.max),
            mean=self.mean + delta * (nb / n),
            m2=self.m2 + other.m2 + delta * delta * (na * (nb / n)),
        )

    @classmethod
    def of(cls, values: Any) -> Moments:
        """The moments of one slab: a numpy array (any shape), masked array, scalar or
        :class:`WithMissing`."""
        mask, missing = None, math.nan
        if isinstance(values, WithMissing):
            values, missing = np.asarray(values.values), values.missing
            if not (_native is not None and values.dtype.char in "fd" and values.dtype.isnative):
                values = np.ma.masked_equal(values, values.dtype.type(missing), copy=False)
                missing = math.nan
        if isinstance(values, np.ma.MaskedArray):
            given = np.ma.getmask(values)
            values = values.data
            if given is not np.ma.nomask and given.any():
                mask = np.broadcast_to(given, np.shape(values)).reshape(-1)
        x = np.asarray(values)
        if not is_numeric(x.dtype):
            raise TypeError(f"not a numeric dtype: {x.dtype}")
        x = x.reshape(-1)
        if x.dtype.kind == "b":
            x = x.view(np.uint8)
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if not x.size:
            return cls()
        with np.errstate(invalid="ignore", over="ignore"):  # inf values: mean inf, std NaN
            if _native is not None and x.dtype.char in _NATIVE_CHARS:
                return _native_moments(x, mask, missing)
            return _flat_moments(x, mask)

    def columns(self) -> dict[str, Any]:
        """The ``stat_*`` columns: counts as ints, the rest float64 (None without values)."""
        empty = not self.count
        return {
            "stat_count": self.count,
            "stat_nan_count": self.nan_count,
            "stat_min": None if empty else float(self.min),
            "stat_max": None if empty else float(self.max),
            "stat_mean": None if empty else float(self.mean),
            "stat_std": None if empty else math.sqrt(self.m2 / self.count),
        }


def _nanless_min(a: Any, b: Any) -> Any:
    return b if b < a else a


def _nanless_max(a: Any, b: Any) -> Any:
    return b if b > a else a


def _sum(rows: np.ndarray, tail: np.ndarray) -> float:
    """Sum of all elements of ``rows`` and ``tail`` (rows: a BLAS matrix-vector product with ones)."""
    return (float((rows @ _ONES[:rows.shape[1]]).sum()) if rows.size else 0.0) + float(tail.sum())


def _sum_of_squares(rows: np.ndarray, tail: np.ndarray) -> float:
    """Sum of the squares of all elements of ``rows`` and ``tail`` (BLAS dot products per row)."""
    if _vecdot is not None:
        squares = float(_vecdot(rows, rows).sum())
    else:
        squares = float(sum(np.dot(row, row) for row in rows))
    return squares + float(np.dot(tail, tail))


def _shift_too_far(shift: float, m2: float) -> bool:
    """Whether ``M2 = S2 - S1**2/n`` (``shift`` = S1**2/n) lost too much to cancellation: the
    shift lies far from the mean relative to the spread, so the values are summed again around
    their own mean."""
    return shift > 1e4 * m2 or m2 < 0


def _native_moments(x: np.ndarray, mask: np.ndarray | None, missing_value: float = math.nan) -> Moments:
    """:func:`_flat_moments` by the C kernel, in one call (one pass; a second one only when the
    shift, the first value, lies far from the mean relative to the spread). Float values equal
    to ``missing_value`` count as missing."""
    x = np.ascontiguousarray(x)
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
    count, missing, lo, hi, c, s1, s2 = _native.moments(x, mask, math.nan, missing_value)
    if not count:
        return Moments(nan_count=missing)
    shift = s1 * s1 / count
    m2 = s2 - shift
    mean = c + s1 / count
    if not (math.isfinite(mean) and math.isfinite(m2)) and math.isfinite(lo) and math.isfinite(hi):
        # finite values whose differences or squares overflow float64 (a spread beyond 1.8e308,
        # values beyond 1e154: S2 - S1^2/n is inf - inf): the kernel's sums cannot hold them;
        # numpy's path shifts by the midrange (a std that overflows is inf there, as numpy's)
        if not math.isnan(missing_value):
            hit = x == missing_value
            mask = hit if mask is None else mask | hit
        with np.errstate(over="ignore", invalid="ignore"):  # M2 may overflow: the std is then inf or nan
            return _flat_moments(x.reshape(-1), None if mask is None else mask.reshape(-1))
    if _shift_too_far(shift, m2) and math.isfinite(mean):
        count, missing, lo, hi, c, s1, s2 = _native.moments(x, mask, mean, missing_value)
        m2, mean = s2 - s1 * s1 / count, c + s1 / count
    return Moments(count, missing, lo, hi, mean, m2)


def _flat_moments(x: np.ndarray, mask: np.ndarray | None) -> Moments:
    """The moments of a non-empty 1-D numeric array (``mask``: True where missing).

    One pass over the data per block of :data:`BLOCK_ELEMENTS`: the block is copied to float64
    scratch (that stays in cache) minus a shift ``c``, missing values (NaN, masked) are set to 0
    there, and two BLAS sums give ``S1 = sum(x - c)`` and ``S2 = sum((x - c)**2)``; then
    ``mean = c + S1 / n`` and ``M2 = S2 - S1**2 / n``. ``c`` is the mean so far (the first
    block's midrange), so ``S1`` is small and the subtraction loses nothing that matters; a block
    whose mean lies far from ``c`` (relative to its spread) is summed again around its own mean
    (two-pass). Blocks merge with Chan's formula. Min and max come from the values as stored
    (exact: Python ints for integer arrays).
    """
    buf = _buffer()
    flags = _scratch.flags
    is_float = x.dtype.kind == "f"
    exact_in_float64 = is_float or x.dtype.itemsize < 8
    limits = None if is_float else np.iinfo(x.dtype)
    total = Moments()
    for start in range(0, x.size, BLOCK_ELEMENTS):
        block = x[start:start + BLOCK_ELEMENTS]
        nb = block.size
        missing = None
        if is_float:
            missing = np.isnan(block, out=flags[:nb])
            if mask is not None:
                missing |= mask[start:start + nb]
        elif mask is not None:
            missing = mask[start:start + nb]
        absent = int(np.count_nonzero(missing)) if missing is not None else 0
        count = nb - absent
        if not count:
            total = total.merge(Moments(nan_count=absent))
            continue
        d = buf[:nb]
        np.copyto(d, block, casting="unsafe")
        where = np.flatnonzero(missing) if absent else None
        if not absent:
            lo, hi = block.min(), block.max()
        elif is_float and mask is None:
            lo, hi = np.fmin.reduce(block), np.fmax.reduce(block)  # skip NaN
        elif exact_in_float64:
            d[where] = np.nan
            lo, hi = np.fmin.reduce(d), np.fmax.reduce(d)
        else:  # 64-bit integers with masked values: compare the stored values
            present = np.logical_not(missing)
            lo = np.minimum.reduce(block, where=present, initial=limits.max)
            hi = np.maximum.reduce(block, where=present, initial=limits.min)
        lo, hi = (float(lo), float(hi)) if is_float else (int(lo), int(hi))
        if total.count and math.isfinite(total.mean):
            c = total.mean
        else:
            c = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else 0.0
        d -= c
        if absent:
            d[where] = 0.0
        full = nb - nb % ROW_ELEMENTS
        rows, tail = d[:full].reshape(-1, ROW_ELEMENTS), d[full:]
        s1 = _sum(rows, tail)
        s2 = _sum_of_squares(rows, tail)
        shift = s1 * s1 / count
        m2 = s2 - shift
        if _shift_too_far(shift, m2):  # c far from this block's mean: sum around that mean
            mean_d = s1 / count
            d -= mean_d
            if absent:
                d[where] = 0.0
            m2, c, s1 = _sum_of_squares(rows, tail), c + mean_d, 0.0
        total = total.merge(Moments(count, absent, lo, hi, c + s1 / count, m2))
    return total


# --- slab planning ---------------------------------------------------------------------------


def iter_slabs(shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...] | None,
               target_bytes: int | Callable[[], int]) -> Iterator[Slab]:
    """Hyperslabs covering the array exactly once, each made of whole storage chunks.

    A slab takes one chunk along the axes before a split axis ``k``, ``m`` chunks along ``k``
    and everything along the axes after it, with ``k`` the slowest axis for which that is about
    ``target_bytes`` (at least one chunk). Contiguous arrays (``chunks`` None) count one element
    as a chunk, so every slab is one contiguous byte range (a run of rows). ``target_bytes``
    may be a callable, asked before each slab: the size may change between slabs.
    """
    ndim = len(shape)
    if ndim == 0:
        _target(target_bytes)
        yield ()
        return
    if 0 in shape:
        return
    chunk = [max(1, min(c, s)) for c, s in zip(chunks or (1,) * ndim, shape, strict=True)]
    grid = [-(-s // c) for s, c in zip(shape, chunk, strict=True)]
    # level[k]: bytes of one chunk along axes <= k and the whole extent after k
    level = []
    for k in range(ndim):
        level.append(math.prod(chunk[:k + 1]) * math.prod(shape[k + 1:]) * itemsize)
    cursor = [0] * ndim
    while True:
        target = _target(target_bytes)
        k = next((k for k in range(ndim) if level[k] <= target), ndim - 1)
        last = max((j for j in range(ndim) if cursor[j]), default=-1)
        k = max(k, last)  # a slab may only span whole extents after k: start there
        m = min(max(1, target // level[k]), grid[k] - cursor[k])
        slab = []
        for j in range(ndim):
            if j < k:
                lo, hi = cursor[j], cursor[j] + 1
            elif j == k:
                lo, hi = cursor[j], cursor[j] + m
            else:
                slab.append((0, shape[j]))
                continue
            slab.append((lo * chunk[j], min(hi * chunk[j], shape[j])))
        yield tuple(slab)
        cursor[k] += m
        while cursor[k] == grid[k]:  # carry into the slower axes
            cursor[k] = 0
            k -= 1
            if k < 0:
                return
            cursor[k] += 1


def _target(target_bytes: int | Callable[[], int]) -> int:
    return max(1, int(target_bytes() if callable(target_bytes) else target_bytes))


def plan_slabs(shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...] | None,
               target_bytes: int) -> list[Slab]:
    """Every slab of :func:`iter_slabs` for a fixed target size."""
    return list(iter_slabs(tuple(shape), itemsize, chunks, target_bytes))


def array_stats(reader: ArrayReader, ref: ArrayRef, slab_bytes: int | Callable[[], int],
                before_read: Callable[[], None] | None = None) -> Moments:
    """The moments of one array, read slab by slab.

    ``slab_bytes`` may be a callable (the memory governor's current size), asked before each
    slab; ``before_read`` (backpressure: it may pause) is called before each slab is planned
    and read.
    """

    def size() -> int:
        if before_read is not None:
            before_read()
        return _target(slab_bytes)

    total = Moments()
    for slab in iter_slabs(ref.shape, ref.itemsize, ref.chunks, size):
        for values in slab_values(reader, ref, slab):
            total = total.merge(Moments.of(values))
    return total


def slab_values(reader: ArrayReader, ref: ArrayRef, slab: Slab) -> Iterator[Any]:
    """The values of one slab: the reader's ``pieces`` where it has them, else one ``read``."""
    pieces = getattr(reader, "pieces", None)
    return pieces(ref, slab) if pieces is not None else iter((reader.read(ref, slab),))
