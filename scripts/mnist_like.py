"""MNIST-format files made from the bundled 8x8 digits, for runs that need MNIST's shape offline.

Each digit (pixel counts 0..16) is enlarged to 20x20 by bilinear interpolation,
scaled to uint8 0..255 and placed in a 28x28 frame, centred as MNIST centres its
digits in a 20x20 box, then moved by small shifts (up to ``max_shift`` pixels each
way, each copy a different shift) to give more examples. The held-out test digits
are other digits than the training ones (a stratified split of the originals), so
no test image is a shifted copy of a training image.

The four files carry MNIST's names (``train-images-idx3-ubyte.gz`` ...), uint8
images ``(n, 28, 28)`` and uint8 labels ``(n,)``, so they load with the MNIST loader
(``nnx.data.load_mnist(checksums=...)``) and, as a user's own files, with
``--dataset DIR`` (``nnx.data.load_idx_folder``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nnx.data import stratified_split, write_idx
from nnx.data.digits import read_digits
from nnx.data.mnist import FILES

__all__ = ["write_mnist_like", "mnist_like_arrays", "enlarge"]

SIZE, BOX = 28, 20  # MNIST: a 28x28 frame, the digit fitted into its central 20x20 box


def _interpolation(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` bilinear weights: pixel centres of the output mapped onto the input."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), lo), 1 - (pos - lo))
    np.add.at(w, (np.arange(n_out), hi), pos - lo)
    return w


def enlarge(images: np.ndarray, size: int = BOX) -> np.ndarray:
    """``(n, h, w)`` images in [0, 1] -> ``(n, size, size)`` uint8 0..255, bilinear."""
    rows = _interpolation(images.shape[1], size)
    cols = _interpolation(images.shape[2], size)
    big = np.einsum("ij,njk,lk->nil", rows, images, cols)
    return np.clip(np.rint(big * 255), 0, 255).astype(np.uint8)


def _framed(boxes: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each ``(BOX, BOX)`` digit of ``boxes`` in a 28x28 frame, moved by its ``(dy, dx)``."""
    out = np.zeros((len(boxes), SIZE, SIZE), np.uint8)
    edge = (SIZE - BOX) // 2
    for i, (box, (dy, dx)) in enumerate(zip(boxes, shifts)):
        out[i, edge + dy:edge + dy + BOX, edge + dx:edge + dx + BOX] = box
    return out


def _copies(boxes, labels, copies: int, max_shift: int, rng):
    """``copies`` shifted copies of every digit (distinct shifts per digit, in random order)."""
    grid = np.array([(dy, dx) for dy in range(-max_shift, max_shift + 1)
                     for dx in range(-max_shift, max_shift + 1)])
    if copies > len(grid):
        raise ValueError(f"{copies} copies need more than the {len(grid)} shifts of "
                         f"max_shift={max_shift}")
    picks = np.stack([rng.choice(len(grid), copies, replace=False) for _ in boxes])
    images = _framed(np.repeat(boxes, copies, axis=0), grid[picks.ravel()])
    order = rng.permutation(len(images))
    return images[order], np.repeat(labels, copies)[order].astype(np.uint8)


def mnist_like_arrays(train_copies: int = 2, test_copies: int = 4, *, max_shift: int = 2,
                      test_fraction: float = 0.2, seed: int = 0):
    """Train images ``(n, 28, 28)`` uint8, train labels ``(n,)`` uint8, test images, test
    labels: ``train_copies`` shifted copies of each training digit and ``test_copies`` of
    each held-out one (``test_fraction`` of the 1,797 digits, stratified)."""
    rng = np.random.default_rng(seed)
    x, y = read_digits()  # (1797, 64) in [0, 1], labels 0..9
    boxes = enlarge(x.reshape(-1, 8, 8))
    train, test = stratified_split(y, test_fraction, rng)
    return (*_copies(boxes[train], y[train], train_copies, max_shift, rng),
            *_copies(boxes[test], y[test], test_copies, max_shift, rng))


def write_mnist_like(folder, train_copies: int = 2, test_copies: int = 4, *,
                     max_shift: int = 2, seed: int = 0) -> dict[str, str]:
    """Write the four MNIST files of :func:`mnist_like_arrays` into ``folder`` (created);
    returns their SHA-256 ``{file name: hex}``, the table ``load_mnist(checksums=)`` takes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = mnist_like_arrays(train_copies, test_copies, max_shift=max_shift, seed=seed)
    table = {}
    for name, array in zip(FILES, arrays):
        write_idx(folder / name, array)
        table[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return table
