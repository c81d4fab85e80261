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


def _row_hashes(words: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """A 64-bit hash per row: mixed words times fixed odd multipliers, summed mod 2**64."""
    mult = np.random.default_rng(12345).integers(1, 2**63, words.shape[1], dtype=np.uint64)
    mult |= np.uint64(1)
    out = np.empty(words.shape[0], np.uint64)
    for start in range(0, words.shape[0], chunk):
        w = words[start:start + chunk]
        w = w ^ (w >> np.uint64(29))
        out[start:start + chunk] = (w * mult).sum(axis=1, dtype=np.uint64)
    return out


def _rows(x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1) if x.ndim != 2 else x


def find_duplicates(x_a, x_b=None, *, max_examples: int = 5) -> Duplicates:
    """Rows of ``x_b`` (n_b, features) that also occur in ``x_a`` (n_a, features).

    With ``x_b`` None, finds rows of ``x_a`` that repeat an earlier row. Rows
    are compared exactly (bytes after converting both to a common dtype, with
    -0.0 equal to 0.0): a hash finds the candidates, a comparison of the values
    confirms them, so a hash collision cannot make a false duplicate. 60,000 x 784
    rows take a fraction of a second.
    """
    x_a = _rows(x_a)
    if x_b is None:
        return _self_duplicates(x_a, max_examples)
    x_b = _rows(x_b)
    if x_a.shape[1] != x_b.shape[1]:
        raise DataError(f"cannot compare rows of {x_a.shape[1]} and {x_b.shape[1]} features")
    dtype = np.result_type(x_a, x_b)
    wa, wb = _row_bytes(x_a, dtype), _row_bytes(x_b, dtype)
    ha, hb = _row_hashes(wa), _row_hashes(wb)
    order = np.argsort(ha, kind="stable")
    sorted_ha = ha[order]
    left = np.searchsorted(sorted_ha, hb, side="left")
    right = np.searchsorted(sorted_ha, hb, side="right")
    pairs = []
    for j in np.flatnonzero(right > left):
        for k in range(left[j], right[j]):  # almost always one candidate
            if np.array_equal(wa[order[k]], wb[j]):
                pairs.append((int(order[k]), int(j)))
                break
    examples = np.array(pairs[:max_examples], dtype=np.int64).reshape(-1, 2)
    return Duplicates(len(pairs), examples)


def _self_duplicates(x: np.ndarray, max_examples: int) -> Duplicates:
    words = _row_bytes(x, x.dtype)
    h = _row_hashes(words)
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    pairs = []
    for pos in np.flatnonzero(sorted_h[1:] == sorted_h[:-1]) + 1:
        later = int(order[pos])
        start = int(np.searchsorted(sorted_h, sorted_h[pos], side="left"))
        for k in range(start, pos):
            if np.array_equal(words[order[k]], words[later]):
                pairs.append((int(order[k]), later))
                break
    pairs.sort(key=lambda p: p[1])
    examples = np.array(pairs[:max_examples], dtype=np.int64).reshape(-1, 2)
    return Duplicates(len(pairs), examples)
