"""Rows shared by two arrays, or repeated in one (train/test leakage, duplicated examples).

The one duplicate finder: :func:`find_duplicates`; the doctor's leakage check
and ``nnx.doctor.duplicate_rows`` use it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import DataError

__all__ = ["Duplicates", "find_duplicates"]


class Duplicates(NamedTuple):
    """What :func:`find_duplicates` returns.

    ``count``: rows of ``x_b`` with an identical row in ``x_a`` (or, for one
    array, rows repeating an earlier row); ``examples``: int64 (k, 2) pairs
    ``(row in x_a, row in x_b)``, at most ``max_examples`` of them.
    """

    count: int
    examples: np.ndarray


def _row_bytes(x: np.ndarray, dtype) -> np.ndarray:
    """uint64 words (n, w) holding each row's bytes, zero-padded to a multiple of 8."""
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.dtype.kind == "f":
        x = x + 0  # -0.0 becomes 0.0, so equal values have equal bytes
    raw = x.view(np.uint8).reshape(x.shape[0], -1)
    pad = -raw.shape[1] % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((raw.shape[0], pad), np.uint8)], axis=1)
    return raw.view(np.uint64)


#: rows are hashed this many bytes at a time, so that every pass over them stays in the
#: cache (60,000 x 784 float32 in about a third of the time of one pass per operation)
_CHUNK_BYTES = 1 << 18


def _multipliers(words: int) -> np.ndarray:
    mult = np.random.default_rng(12345).integers(1, 2**63, words, dtype=np.uint64)
    return mult | np.uint64(1)


def _row_hashes(x: np.ndarray, dtype) -> np.ndarray:
    """A 64-bit hash per row of ``x`` (n, features) in ``dtype``: the row's bytes as
    :func:`_row_bytes` gives them, each word mixed, times a fixed odd multiplier, summed
    mod 2**64. Computed a block of rows at a time, never copying the whole array."""
    dtype = np.dtype(dtype)
    nbytes = x.shape[1] * dtype.itemsize
    words = -(-nbytes // 8)
    mult = _multipliers(words)
    chunk = max(1, _CHUNK_BYTES // max(8 * words, 1))
    out = np.empty(x.shape[0], np.uint64)
    buf = np.zeros((min(chunk, x.shape[0]), 8 * words), np.uint8)  # the padding stays 0
    mixed = np.empty((buf.shape[0], words), np.uint64)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]
        k = part.shape[0]
        values = buf[:k, :nbytes].view(dtype)
        if dtype.kind == "f":
            np.add(part, 0, out=values, casting="unsafe")  # -0.0 becomes 0.0
        else:
            values[...] = part
        w, m = buf[:k].view(np.uint64), mixed[:k]
        np.right_shift(w, np.uint64(29), out=m)
        np.bitwise_xor(m, w, out=m)
        np.multiply(m, mult, out=m)
        m.sum(axis=1, dtype=np.uint64, out=out[start:start + k])
    return out


def _equal_rows(x_a, ia, x_b, ib, dtype, chunk: int = 4096) -> np.ndarray:
    """Whether row ``ia[t]`` of ``x_a`` and row ``ib[t]`` of ``x_b`` hold the same bytes in
    ``dtype`` (-0.0 equal to 0.0), for every ``t``."""
    same = np.empty(len(ia), bool)
    for s in range(0, len(ia), chunk):
        wa = _row_bytes(x_a[ia[s:s + chunk]], dtype)
        wb = _row_bytes(x_b[ib[s:s + chunk]], dtype)
        same[s:s + chunk] = np.all(wa == wb, axis=1)
    return same


def _first_equal(x_a, order, cands, x_b, js, dtype) -> np.ndarray:
    """For each ``js[t]``, the first row ``order[k]`` of ``x_a``, ``k`` in the candidate
    range ``cands[t] = (lo, hi)``, equal to row ``js[t]`` of ``x_b``; -1 where none is.
    The first candidates are compared together; the others (a hash collision) one by one."""
    lo, hi = cands
    found = np.full(len(js), -1, np.int64)
    if not len(js):
        return found
    first = order[lo]
    same = _equal_rows(x_a, first, x_b, js, dtype)
    found[same] = first[same]
    for t in np.flatnonzero(~same & (hi - lo > 1)):  # almost never: a collision
        for k in range(lo[t] + 1, hi[t]):
            if _equal_rows(x_a, order[k:k + 1], x_b, js[t:t + 1], dtype)[0]:
                found[t] = order[k]
                break
    return found


def _rows(x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1) if x.ndim != 2 else x


def find_duplicates(x_a, x_b=None, *, max_examples: int = 5) -> Duplicates:
    """Rows of ``x_b`` (n_b, features) that also occur in ``x_a`` (n_a, features).

    With ``x_b`` None, finds rows of ``x_a`` that repeat an earlier row. Rows
    are compared exactly (bytes after converting both to a common dtype, with
    -0.0 equal to 0.0): a hash finds the candidates, a comparison of the values
    confirms them, so a hash collision cannot make a false duplicate. Between two
    large arrays only the rows that agree with a row of the other array on a 64-byte
    block are hashed whole (:func:`_candidates`): 60,000 x 784 float32 against 5,000
    rows in about 15 ms.
    """
    x_a = _rows(x_a)
    if x_b is None:
        return _self_duplicates(x_a, max_examples)
    x_b = _rows(x_b)
    if x_a.shape[1] != x_b.shape[1]:
        raise DataError(f"cannot compare rows of {x_a.shape[1]} and {x_b.shape[1]} features")
    dtype = np.result_type(x_a, x_b)
    candidates = _candidates(x_a, x_b, dtype)
    if candidates is None:
        return _shared_rows(x_a, x_b, dtype, max_examples)
    ia, ib = candidates
    found = _shared_rows(x_a[ia], x_b[ib], dtype, max_examples)
    return Duplicates(found.count, np.stack([ia[found.examples[:, 0]],
                                             ib[found.examples[:, 1]]], axis=1))


def _shared_rows(x_a, x_b, dtype, max_examples: int) -> Duplicates:
    ha, hb = _row_hashes(x_a, dtype), _row_hashes(x_b, dtype)
    order = np.argsort(ha, kind="stable")
    sorted_ha = ha[order]
    left = np.searchsorted(sorted_ha, hb, side="left")
    right = np.searchsorted(sorted_ha, hb, side="right")
    js = np.flatnonzero(right > left)
    found = _first_equal(x_a, order, (left[js], right[js]), x_b, js, dtype)
    hit = found >= 0
    pairs = np.stack([found[hit], js[hit]], axis=1)
    return Duplicates(int(hit.sum()), pairs[:max_examples].astype(np.int64).reshape(-1, 2))


#: two arrays of more bytes than this are first compared on one block of each row
_PREFILTER_BYTES = 1 << 22
#: the blocks are chosen as the most varied among this many evenly spaced rows of x_a
_PREFILTER_ROWS = 256


def _candidates(x_a, x_b, dtype):
    """``(rows of x_a, rows of x_b)`` that may be equal, ascending: those whose most varied
    64-byte block (chosen on a sample of ``x_a``) equals the same block of some row of the
    other array. Equal rows agree on every block, so no duplicate is left out. None where
    the arrays are small, the rows short, or the block thins out less than half of
    ``x_a``'s rows (then every row is hashed whole)."""
    dtype = np.dtype(dtype)
    block = max(1, 64 // dtype.itemsize)
    n_blocks = x_a.shape[1] // block
    if n_blocks < 4 or (x_a.shape[0] + x_b.shape[0]) * x_a.shape[1] * dtype.itemsize \
            <= _PREFILTER_BYTES:
        return None
    idx = np.unique(np.linspace(0, x_a.shape[0] - 1, _PREFILTER_ROWS).astype(np.int64))
    sample = x_a[idx, :n_blocks * block].reshape(-1, block)  # (rows * n_blocks, block)
    varied = np.sort(_row_hashes(sample, dtype).reshape(idx.size, n_blocks), axis=0)
    distinct = 1 + np.count_nonzero(np.diff(varied, axis=0), axis=0)
    cols = slice(int(np.argmax(distinct)) * block, (int(np.argmax(distinct)) + 1) * block)
    pa = _row_hashes(np.ascontiguousarray(x_a[:, cols]), dtype)  # one cache line a row
    pb = _row_hashes(np.ascontiguousarray(x_b[:, cols]), dtype)
    in_a = np.isin(pa, pb)
    if 2 * np.count_nonzero(in_a) > x_a.shape[0]:
        return None
    return np.flatnonzero(in_a), np.flatnonzero(np.isin(pb, pa[in_a]))


def _self_duplicates(x: np.ndarray, max_examples: int) -> Duplicates:
    h = _row_hashes(x, x.dtype)
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    later = np.flatnonzero(sorted_h[1:] == sorted_h[:-1]) + 1  # positions in sorted order
    starts = np.searchsorted(sorted_h, sorted_h[later], side="left")
    rows = order[later]
    found = _first_equal(x, order, (starts, later), x, rows, x.dtype)
    hit = found >= 0
    pairs = np.stack([found[hit], rows[hit]], axis=1)
    pairs = pairs[np.argsort(pairs[:, 1], kind="stable")]
    return Duplicates(int(hit.sum()), pairs[:max_examples].astype(np.int64).reshape(-1, 2))
