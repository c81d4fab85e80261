"""Model files that lie: an architecture larger than the arrays stored beside it, metadata of
the wrong types, arrays that are not floats, sizes beyond the machine. Each is one
CheckpointError naming the file, raised before anything is allocated for it."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import nnx
from nnx.checkpoint import load_checkpoint, save_checkpoint
from nnx.errors import CheckpointError


def _arrays(path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__meta__").tobytes()), arrays


def _write(path, meta: dict, arrays: dict) -> None:
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, __meta__=blob, **arrays)


def _small_model(path):
    nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), path)
    return _arrays(path)


def _dense(n_in, n_out):
    return {"type": "Dense", "config": {"n_in": n_in, "n_out": n_out, "init": "auto",
                                        "family": "relu", "bias": True}}


def _layers(sizes, **kw) -> list:
    """The layers of an MLP of ``sizes`` as a file stores them (built, never allocated)."""
    return nnx.mlp(list(sizes), **kw).config()["layers"]


def _with_layers(meta, layers):
    return {**meta, "architecture": {**meta["architecture"], "layers": layers}}


def _peak_during(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


#: (what, how the metadata and arrays are changed, words of the error)
LIES = [
    ("a hidden layer far larger than its weights",
     lambda m, a: (_with_layers(m, _layers([3, 4000, 2])), a),
     ["dense_0.w has shape (3, 4)", "declares (3, 4000)", "nothing was allocated"]),
    ("a layer of a trillion weights", lambda m, a: (_with_layers(m, _layers([10**6, 10**6, 2])),
                                                    a),
     ["declares (1000000, 1000000)", "1,000,000,000,000 values"]),
    ("a huge layer more than the file holds",
     lambda m, a: (_with_layers(m, _layers([3, 4, 2, 10**6])), a),
     ["dense_4.w", "holds no such array"]),
    ("a huge BatchNorm", lambda m, a: (_with_layers(m, _layers([3, 4, 10**8, 2],
                                                               batchnorm=True)), a),
     ["this architecture does not"]),
    ("an array of no layer", lambda m, a: (m, {**a, "param/dense_9.w": np.zeros(3)}),
     ["arrays this architecture does not: dense_9.w"]),
    ("weights of integers", lambda m, a: (m, {**a, "param/dense_0.w": np.ones((3, 4), int)}),
     ["dense_0.w is not an array of floats"]),
    ("weights as text", lambda m, a: (m, {**a, "param/dense_0.b": np.array(["x"] * 4)}),
     ["dense_0.b"]),
    ("the version as text", lambda m, a: ({**m, "version": "1"}, a), ["format version is '1'"]),
    ("the version as a list", lambda m, a: ({**m, "version": [1]}, a), ["format version"]),
    ("a newer version", lambda m, a: ({**m, "version": 99}, a), ["newer nnx"]),
    ("the architecture as text", lambda m, a: ({**m, "architecture": "mlp"}, a),
     ["architecture is not a model configuration"]),
    ("the layers as a table", lambda m, a: ({**m, "architecture": {"layers": {"0": 1}}}, a),
     ["architecture is not a model configuration"]),
    ("a layer without a type", lambda m, a: (_with_layers(m, [{"config": {}}]), a),
     ["cannot rebuild the saved architecture"]),
    ("a layer of an unknown type", lambda m, a: (_with_layers(m, [{"type": "Magic",
                                                                     "config": {}}]), a),
     ["cannot rebuild", "register_layer"]),
    ("a layer size as text", lambda m, a: (_with_layers(m, [_dense("3", 4)]), a),
     ["cannot rebuild", "n_in"]),
    ("an integer dtype", lambda m, a: ({**m, "dtype": "int32"}, a), ["dtype is 'int32'"]),
    ("the dtype as a number", lambda m, a: ({**m, "dtype": 5}, a), ["dtype is 5"]),
    ("an unknown kind", lambda m, a: ({**m, "kind": 7}, a), ["kind is 7"]),
]


@pytest.mark.parametrize("what, lie, words", LIES, ids=[case[0] for case in LIES])
def test_a_model_file_that_lies_is_refused_before_anything_is_allocated(tmp_path, what, lie,
                                                                        words):
    meta, arrays = _small_model(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    _write(bad, *lie(meta, arrays))
    caught = []

    def load():
        with pytest.raises(CheckpointError) as exc:
            nnx.load(bad)
        caught.append(str(exc.value))

    assert _peak_during(load) < 8 * 2**20  # a 4000 x 4000 layer would draw 128 MB
    assert str(bad) in caught[0]
    for word in words:
        assert word in caught[0], (word, caught[0])


def test_a_checkpoint_that_declares_a_huge_model_is_refused_before_resuming(tmp_path):
    tr = nnx.Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    data = nnx.data.blobs(n=60, classes=3, seed=0)
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=16)
    save_checkpoint(tmp_path / "c.npz", tr)
    meta, arrays = _arrays(tmp_path / "c.npz")
    _write(tmp_path / "c.npz", _with_layers(meta, _layers([2, 10**7, 3])), arrays)
    with pytest.raises(CheckpointError, match=r"declares \(2, 10000000\)"):
        load_checkpoint(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="declares"):
        tr.fit(data.x_train, data.y_train, epochs=2, batch_size=16, resume=tmp_path / "c.npz")


def test_a_safetensors_file_that_declares_a_huge_model_is_refused(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    model = nnx.mlp([3, 4, 2]).init("cpu", 0)
    arch = {**model.config(), "layers": _layers([10**6, 10**6, 2])}
    path = tmp_path / "m.safetensors"
    save_file(model.get_weights(), str(path), metadata={
        "format": "nnx-model", "version": "1", "dtype": "float32",
        "architecture": json.dumps(arch)})
    with pytest.raises(CheckpointError, match=r"dense_0.w has shape \(3, 4\), the architecture "
                                              r"declares \(1000000, 1000000\)"):
        nnx.load(path)
    save_file({**model.get_weights(), "dense_0.w": np.full((3, 4), np.nan, np.float32)},
              str(path), metadata={"format": "nnx-model", "version": "1", "dtype": "float32",
                                   "architecture": json.dumps(model.config())})
    with pytest.raises(CheckpointError, match="NaN or infinite values in dense_0.w"):
        nnx.load(path)
    assert nnx.load(path, allow_nonfinite=True).n_out == 2


def _zip_claiming(arrays: int, size: int) -> bytes:
    """An .npz whose zip directory claims ``arrays`` entries of ``size`` bytes each (their
    real contents are tiny): the size a reader would have to decompress."""
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": np.zeros(1) for i in range(arrays)})
    data = bytearray(buf.getvalue())
    at = data.find(b"PK\x01\x02")
    while at >= 0:  # each central directory entry: uncompressed size at offset 24
        data[at + 24:at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def test_a_file_claiming_more_than_the_memory_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(_zip_claiming(300, 0xFFFFFFF0))  # 300 x 4 GiB claimed
    assert len(zipfile.ZipFile(path).infolist()) == 300
    with pytest.raises(CheckpointError, match="GiB of arrays, more than this machine's"):
        nnx.load(path)
