"""MNIST and Fashion-MNIST: 28x28 grey images of 10 classes, 60,000 train / 10,000 test.

Files already in the data directory are used with no network: the four
``.gz`` files, or their uncompressed copies (``train-images-idx3-ubyte`` or
``train-images.idx3-ubyte``). A file with a known SHA-256 is checked before
use. Missing files are downloaded from the mirrors below (or from the base URLs
in ``$NNX_MNIST_MIRROR`` / ``$NNX_FASHION_MNIST_MIRROR``, comma-separated) and
verified before they are kept. A file that fails its checksum may be the
user's own: the message says how to train on it as a folder of IDX files
(:mod:`nnx.data.idx_folder`, no checksum), and asks to delete it only in case
nnx downloaded it (only the ``.gz`` names are ever downloaded; an uncompressed
copy is always the user's).

Images become float32 in [0, 1] (divided by 255), flattened to ``(n, 784)``;
labels are int64 ``(n,)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ChecksumError, ConfigError, DataError
from .dataset import Dataset
from .download import cache_dir, fetch, sha256
from .idx import REDOWNLOAD, read_idx
from .prepare import to_unit_range

#: the four files, in the order (train images, train labels, test images, test labels)
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: per dataset: base URLs tried in order, the variable that overrides them, and the
#: published SHA-256 of each file (gzip files, and for MNIST the uncompressed ones too)
SOURCES = {
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"),
        "env": "NNX_MNIST_MIRROR",
        "sha256": {
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "env": "NNX_FASHION_MNIST_MIRROR",
        "sha256": {
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}


def _candidates(name: str) -> tuple[str, ...]:
    """Names a copy of ``name`` may have: gzip, uncompressed, and ``train-images.idx3-ubyte``."""
    plain = name[: -len(".gz")]
    return name, plain, plain.replace("-idx", ".idx", 1)


def _mismatch(which: str, path: Path, got: str, expected: str) -> ChecksumError:
    """The error for a file whose SHA-256 is not the published one: it may be the user's own
    (train on its folder instead); only a ``.gz`` name may be a download nnx made."""
    directory = path.parent
    ours = (" If nnx downloaded it, it has been damaged since: delete it and nnx downloads it "
            "again." if path.name in FILES else "")
    return ChecksumError(
        f"{path} is not the published {which} file (SHA-256 {got}, expected {expected}). To "
        f"train on your own IDX files, pass their folder: --dataset {directory} (a folder of "
        f"IDX files is checked for its structure, not a checksum); for the published {which}, "
        f"point --data-dir at another folder and nnx downloads it there.{ours}")


def find_files(directory, checksums: dict, which: str = "mnist") -> dict[str, Path]:
    """The copies of :data:`FILES` present in ``directory``, verified where a checksum is known.

    Returns ``{gzip name: path}`` for those found; raises ChecksumError for a
    file whose SHA-256 does not match (see the module docstring for its advice).
    """
    found = {}
    for name in FILES:
        plain = name[: -len(".gz")]
        for candidate in _candidates(name):
            path = Path(directory) / candidate
            if path.is_file():
                # ``train-images.idx3-ubyte`` holds the same bytes as ``train-images-idx3-ubyte``
                expected = checksums.get(candidate, checksums.get(plain))
                got = sha256(path) if expected is not None else None
                if got is not None and got != expected.lower():
                    raise _mismatch(which, path, got, expected)
                found[name] = path
                break
    return found


def mirrors_for(which: str, mirrors=None) -> list[str]:
    """Base URLs to try: ``mirrors``, else the environment variable, else the built-in ones."""
    if mirrors:
        return [mirrors] if isinstance(mirrors, str) else list(mirrors)
    override = [u.strip() for u in os.environ.get(SOURCES[which]["env"], "").split(",")]
    return [u for u in override if u] or list(SOURCES[which]["mirrors"])


def load_mnist(which: str = "mnist", data_dir=None, *, download: bool = True,
               quiet: bool = False, mirrors=None, checksums: dict | None = None,
               timeout: float = 30.0) -> Dataset:
    """Load ``"mnist"`` or ``"fashion-mnist"`` from ``data_dir``, downloading missing files.

    Parameters
    ----------
    data_dir : folder holding the files (default ``$NNX_DATA_DIR`` or ``~/.cache/nnx``)
    download : fetch missing files; when False a missing file is a DataError
    quiet : no progress bar on stderr
    mirrors : base URLs to download from, overriding the environment and built-ins
    checksums : ``{file name: SHA-256 hex}`` replacing the published table
    timeout : seconds to wait for a server

    Returns a :class:`Dataset`: ``x`` float32 (n, 784) in [0, 1], ``y`` int64 (n,).
    """
    if which not in SOURCES:
        raise ConfigError(f"unknown MNIST-format dataset {which!r}; valid: "
                          f"{', '.join(SOURCES)}")
    table = SOURCES[which]["sha256"] if checksums is None else dict(checksums)
    directory = cache_dir(data_dir)
    found = find_files(directory, table, which)
    missing = [name for name in FILES if name not in found]
    if missing:
        urls = mirrors_for(which, mirrors)
        if not download:
            raise DataError(f"{which}: {', '.join(missing)} not found in {directory}; download "
                            f"them from {urls[0]} into that folder (or pass --data-dir DIR "
                            "holding them), or allow downloading")
        manual = f"the {which} files {', '.join(FILES)}"
        for name in missing:
            if name not in table:
                raise ConfigError(f"no SHA-256 known for {name}; pass it in checksums= so the "
                                  "download can be verified")
            found[name] = fetch(name, urls, directory, table[name], quiet=quiet,
                                timeout=timeout, manual=manual)
    # a damaged .gz may be a download of nnx's; an uncompressed copy is the user's own
    xtr, ytr, xte, yte = (read_idx(found[name], advice=REDOWNLOAD if found[name].name in FILES
                                   else None) for name in FILES)
    _check_pairs(which, directory, ((xtr, ytr, "train"), (xte, yte, "test")))
    flat = lambda a: to_unit_range(a.reshape(a.shape[0], -1))
    return Dataset(flat(xtr), ytr.astype(np.int64), flat(xte), yte.astype(np.int64), which, 10,
                   "classification", {"source": str(directory), "image_shape": xtr.shape[1:],
                                      "pixel_scale": 255.0,
                                      "files": [str(found[name]) for name in FILES]})


def _check_pairs(which: str, directory, pairs) -> None:
    """Images and labels of each split are MNIST's: uint8, one label 0..9 per 2-D image."""
    for images, labels, split in pairs:
        if (images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]
                or images.dtype != np.uint8 or labels.dtype != np.uint8):
            raise DataError(f"{which} {split} files in {directory} do not fit together: "
                            f"images {images.dtype} {images.shape}, labels {labels.dtype} "
                            f"{labels.shape}; they are not the published {which} files (for "
                            f"files of your own, pass the folder: --dataset {directory})")
        if labels.size and int(labels.max()) > 9:
            raise DataError(f"{which} {split} labels go up to {int(labels.max())}, not 9, in "
                            f"{directory}; they are not the published {which} labels (for "
                            f"files of your own, pass the folder: --dataset {directory})")
