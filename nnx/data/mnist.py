"""MNIST and Fashion-MNIST: 28x28 grey images of 10 classes, 60,000 train / 10,000 test.

Files already in the data directory (gzip or not) are used with no network;
missing ones are downloaded from the mirrors below and verified by SHA-256.
Images become float32 in [0, 1], flattened to ``(n, 784)``; labels int64.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .download import cache_dir, fetch, verify
from .idx import read_idx

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

SOURCES = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"],
        "sha256": dict(zip(FILES, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"))),
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "sha256": dict(zip(FILES, (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"))),
    },
}


def _locate(name: str, directory: Path, source: dict, download: bool, quiet: bool,
            checksums: dict | None) -> Path:
    expected = (checksums or source["sha256"]).get(name)
    gz = directory / name
    if gz.exists():
        verify(gz, expected)
        return gz
    plain = directory / name[:-3]
    if plain.exists():  # an uncompressed copy the user placed: no checksum to compare
        return plain
    if not download:
        raise DataError(f"{name} is not in {directory}; put the MNIST files there or allow "
                        "downloading")
    mirrors = source["mirrors"]
    override = os.environ.get("NNX_MNIST_MIRROR")
    if override:
        mirrors = [override]
    return fetch(name, mirrors, directory, expected, quiet=quiet)


def load_mnist(which: str = "mnist", data_dir=None, *, download: bool = True,
               quiet: bool = False, mirrors=None, checksums: dict | None = None) -> Dataset:
    """Load MNIST-format files from ``data_dir`` (default cache), downloading if missing.

    ``mirrors`` and ``checksums`` override the built-in sources (tests use a local server).
    """
    source = dict(SOURCES[which])
    if mirrors:
        source["mirrors"] = list(mirrors)
    directory = cache_dir(data_dir)
    paths = [_locate(f, directory, source, download, quiet, checksums) for f in FILES]
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    for images, labels, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{which} {split} files disagree: images {images.shape}, labels "
                            f"{labels.shape}; delete them from {directory} and download again")
    flat = lambda a: (a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset(flat(xtr), ytr.astype(np.int64), flat(xte), yte.astype(np.int64), which, 10,
                   "classification", {"source": str(directory), "image_shape": xtr.shape[1:]})
