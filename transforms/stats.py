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
  mean and M2 are float64 (values converted to float64, two-pass per block of
  :data:`BLOCK_ELEMENTS`, blocks merged with Chan's formula).
"""

from __future__ import annotations

import dataclasses
import math
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
        """The moments of one slab: a numpy array (any shape), masked array or scalar."""
        mask = None
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
        if x.dtype.byteorder not in "=|" and x.dtype.itemsize > 1:
            x = x.astype(x.dtype.newbyteorder("="))
        if not x.size:
            return cls()
        with np.errstate(invalid="ignore", over="ignore"):  # inf values: mean inf, std NaN
            if mask is None:
                lo, hi = x.min(), x.max()
                if x.dtype.kind != "f" or not (np.isnan(lo) or np.isnan(hi)):
                    mean, m2 = _moments(x)
                    lo, hi = lo.item(), hi.item()
                    if x.dtype.kind == "f":
                        lo, hi = float(lo), float(hi)
                    return cls(int(x.size), 0, lo, hi, mean, m2)
            return _moments_with_missing(x, mask)

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


def _row_dots(rows: np.ndarray, other: np.ndarray) -> float:
    """Sum of the dot products of each row of ``rows`` with ``other`` (a row, or ``rows``)."""
    if _vecdot is not None:
        return float(_vecdot(rows, other).sum())
    if other.ndim == 1:
        return float(sum(np.dot(row, other) for row in rows))
    return float(sum(np.dot(row, row) for row in rows))


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and M2 of a non-empty 1-D array without NaN.

    Per block of :data:`BLOCK_ELEMENTS`: convert to float64 (scratch that stays in cache),
    sum, subtract the block mean, sum of squares; blocks merged with Chan's formula. Sums are
    BLAS dot products of rows of :data:`ROW_ELEMENTS` (OpenBLAS runs a longer dot product on
    all its threads, which on a busy worker is many times slower).
    """
    buf = _buffer()
    n = 0
    mean = m2 = 0.0
    for start in range(0, x.size, BLOCK_ELEMENTS):
        block = x[start:start + BLOCK_ELEMENTS]
        nb = block.size
        d = buf[:nb]
        np.copyto(d, block, casting="unsafe")
        full = nb - nb % ROW_ELEMENTS
        rows, tail = d[:full].reshape(-1, ROW_ELEMENTS), d[full:]
        mean_b = (_row_dots(rows, _ONES[:ROW_ELEMENTS]) + float(tail.sum())) / nb
        d -= mean_b
        m2_b = _row_dots(rows, rows) + float(np.dot(tail, tail))
        if not n:
            n, mean, m2 = nb, mean_b, m2_b
            continue
        total = n + nb
        delta = mean_b - mean
        mean += delta * (nb / total)
        m2 += m2_b + delta * delta * (n * (nb / total))
        n = total
    return mean, m2


def _moments_with_missing(x: np.ndarray, mask: np.ndarray | None) -> Moments:
    """:func:`_moments` of a 1-D array with NaN and/or masked values, block by block.

    Missing values are left out of counts, min and max. In the float64 block they are set to
    ``c``, the mean so far, and taken back out of the sum (``absent * c``) and of the sum of
    squares (``absent * (c - mean)**2``, small next to it when ``c`` is near the mean); when
    that correction is not small, the block is summed again with the missing values at 0.
    """
    buf = _buffer()
    flags = _scratch.flags
    is_float = x.dtype.kind == "f"
    limits = None if is_float else np.iinfo(x.dtype)
    ones = _ONES[:ROW_ELEMENTS]
    total = Moments()
    for start in range(0, x.size, BLOCK_ELEMENTS):
        block = x[start:start + BLOCK_ELEMENTS]
        nb = block.size
        d = buf[:nb]
        np.copyto(d, block, casting="unsafe")
        missing = flags[:nb]
        if is_float:
            np.isnan(d, out=missing)
            if mask is not None:
                missing |= mask[start:start + nb]
        else:
            np.copyto(missing, mask[start:start + nb])
        absent = int(np.count_nonzero(missing))
        count = nb - absent
        if not count:
            total = total.merge(Moments(nan_count=absent))
            continue
        if is_float and mask is None:
            lo, hi = float(np.fmin.reduce(block)), float(np.fmax.reduce(block))  # skip NaN
        elif is_float:
            np.copyto(d, np.nan, where=missing)
            lo, hi = float(np.fmin.reduce(d)), float(np.fmax.reduce(d))
        else:
            present = np.logical_not(missing, out=missing)
            lo = np.minimum.reduce(block, where=present, initial=limits.max).item()
            hi = np.maximum.reduce(block, where=present, initial=limits.min).item()
            np.logical_not(present, out=missing)
        c = total.mean if total.count and math.isfinite(total.mean) else 0.0
        np.copyto(d, c, where=missing)
        full = nb - nb % ROW_ELEMENTS
        rows, tail = d[:full].reshape(-1, ROW_ELEMENTS), d[full:]
        mean = (_row_dots(rows, ones) + float(tail.sum()) - absent * c) / count
        d -= mean
        squares = _row_dots(rows, rows) + float(np.dot(tail, tail))
        correction = absent * (c - mean) ** 2
        if correction > 1e-6 * squares:
            np.copyto(d, 0.0, where=missing)
            squares, correction = _row_dots(rows, rows) + float(np.dot(tail, tail)), 0.0
        m2 = squares - correction
        total = total.merge(Moments(count, absent, lo, hi, mean, 0.0 if m2 < 0 else m2))
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
        total = total.merge(Moments.of(reader.read(ref, slab)))
    return total
