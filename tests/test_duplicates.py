"""Duplicate rows (nnx.data.find_duplicates): between two sets and within one, exact to
the bit, at MNIST size; the doctor's duplicate mask is the same finder.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnx.data import find_duplicates
from nnx.errors import DataError


def test_find_duplicates_between_sets():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (2000, 784), dtype=np.uint8)
    test = rng.integers(0, 256, (500, 784), dtype=np.uint8)
    test[[3, 10, 400]] = train[[7, 1999, 0]]
    found = find_duplicates(train, test)
    assert found.count == 3
    assert found.examples.tolist() == [[7, 3], [1999, 10], [0, 400]]
    assert find_duplicates(train, test, max_examples=1).examples.shape == (1, 2)
    assert find_duplicates(train.astype(np.float32) / 255, test.astype(np.float32) / 255) \
        .count == 3
    assert find_duplicates(train[:, :100], test[:, :100]).count == 3
    assert find_duplicates(train[:5], test[:3]).count == 0


def test_find_duplicates_exactness():
    a = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], np.float32)
    b = np.array([[-0.0, 1.0, 2.0], [1.0, 2.0, 3.0 + 1e-6], [1, 2, 3]], np.float32)
    found = find_duplicates(a, b)
    assert found.count == 2 and found.examples.tolist() == [[0, 0], [1, 2]]
    assert find_duplicates(a, b.astype(np.float64)).count == 2  # compared in a common dtype
    with pytest.raises(DataError, match="3 and 4 features"):
        find_duplicates(a, np.ones((2, 4)))


def test_find_duplicates_within_one_set():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    x[[4, 8, 9]] = x[[1, 1, 2]]
    found = find_duplicates(x)
    assert found.count == 3 and found.examples.tolist() == [[1, 4], [1, 8], [2, 9]]
    assert find_duplicates(np.arange(12).reshape(4, 3)).count == 0


def test_find_duplicates_on_mnist_sized_arrays():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (60000, 784), dtype=np.uint8)
    test = rng.integers(0, 256, (10000, 784), dtype=np.uint8)
    test[::1000] = train[:10]
    found = find_duplicates(train, test)
    assert found.count == 10 and found.examples[0].tolist() == [0, 0]


def test_the_doctors_duplicate_mask_is_the_duplicate_finder():
    from nnx.doctor import duplicate_rows

    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, (300, 3)).astype(np.float32)
    b = rng.integers(0, 4, (200, 3)).astype(np.float32)
    found = find_duplicates(a, b, max_examples=len(b))
    mask = duplicate_rows(a, b)
    assert mask.sum() == found.count > 0 and mask[found.examples[:, 1]].all()
    assert not duplicate_rows(a, np.zeros((0, 3))).size


def _brute_force(a, b):
    """(row of a, row of b) of every row of b equal to some row of a (the first such)."""
    pairs = []
    for j, row in enumerate(b):
        same = np.flatnonzero(np.all(a == row, axis=1))
        if same.size:
            pairs.append([int(same[0]), j])
    return pairs


@pytest.mark.parametrize("chunk_bytes", [8, 100, 1 << 18])
def test_hashing_a_block_of_rows_at_a_time_finds_the_same_rows(monkeypatch, chunk_bytes):
    from nnx.data import duplicates

    monkeypatch.setattr(duplicates, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, (257, 5)).astype(np.float32)  # 20 bytes a row: padded words
    a[::7] *= -1  # -0.0 among them
    b = rng.integers(0, 3, (131, 5)).astype(np.float32)
    found = find_duplicates(a, b, max_examples=len(b))
    assert found.examples.tolist() == _brute_force(a, b) and found.count > 10
    within = find_duplicates(a, max_examples=len(a))
    expected = sorted(([i, j] for j in range(len(a)) for i in range(j)
                       if (a[i] == a[j]).all() and not any((a[k] == a[j]).all()
                                                           for k in range(i))),
                      key=lambda p: p[1])
    assert within.examples.tolist() == expected


def test_rows_whose_hashes_collide_are_told_apart(monkeypatch):
    from nnx.data import duplicates

    # every multiplier 0: every row hashes to 0, so each is compared with every candidate
    monkeypatch.setattr(duplicates, "_multipliers", lambda words: np.zeros(words, np.uint64))
    a = np.array([[1, 2], [3, 4], [5, 6], [3, 4]], np.int64)
    b = np.array([[5, 6], [7, 8], [3, 4]], np.int64)
    found = find_duplicates(a, b)
    assert found.count == 2 and found.examples.tolist() == [[2, 0], [1, 2]]
    within = find_duplicates(a)
    assert within.count == 1 and within.examples.tolist() == [[1, 3]]


def test_large_arrays_are_compared_on_one_block_first_and_nothing_is_missed(monkeypatch):
    from nnx.data import duplicates

    monkeypatch.setattr(duplicates, "_PREFILTER_BYTES", 0)  # these small arrays too
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, (400, 70)).astype(np.float32)  # 4 blocks of 16 and a tail of 6
    a[::9] *= -1  # -0.0 among them
    b = rng.integers(0, 3, (120, 70)).astype(np.float32)
    copies = a[::13][:30].copy()
    copies[copies == 0] = -0.0  # -0.0 against 0.0 in the copies
    b[::4] = copies
    ia, ib = duplicates._candidates(a, b, np.float32)
    assert len(ia) < len(a) // 2 and set(range(0, 120, 4)) <= set(ib)  # it thinned them out
    found = find_duplicates(a, b, max_examples=len(b))
    assert found.count == 30 and found.examples.tolist() == _brute_force(a + 0, b + 0)
    # every block alike, the rows different only in the tail: no thinning, every row hashed
    tail = np.zeros((400, 70), np.float32)
    tail[:, 64:] = rng.integers(0, 50, (400, 6))
    assert duplicates._candidates(tail, tail[::7], np.float32) is None
    assert find_duplicates(tail, tail[::7], max_examples=100).examples.tolist() == \
        _brute_force(tail, tail[::7])
