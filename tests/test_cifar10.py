"""The CIFAR-10 builder on a small tarball in the format of cifar-10-python.tar.gz."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

from jaxvae import data as D
from jaxvae.data import DataError
from jaxvae.data import cifar10

PER_BATCH, N_TEST = 4, 6  # 5 training batches of 4: 20 images -> 18 train / 2 validation (the last tenth)


def write_tarball(path, rng, *, evil=False):
    """data_batch_1..5, test_batch and batches.meta as the real release pickles them (channel-major rows)."""
    batches = {}
    for name, n in [(f"data_batch_{i}", PER_BATCH) for i in range(1, 6)] + [("test_batch", N_TEST)]:
        batches[name] = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}
    if evil:
        batches["test_batch"] = {b"data": EvilPayload()}
    with tarfile.open(path, "w:gz") as tar:
        for name, d in [*batches.items(), ("batches.meta", {b"label_names": [n.encode() for n in cifar10.LABEL_NAMES]})]:
            raw = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


class EvilPayload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_builder_shapes_labels_and_split(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    batches = write_tarball(manual / cifar10.ARCHIVE, np.random.default_rng(0))
    ds = D.load_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=manual, download=False,
                        keep_shape=True)
    assert ds.image_shape == (32, 32, 3)
    assert ds.train.shape == (18, 32, 32, 3) and ds.valid.shape == (2, 32, 32, 3)
    assert ds.test.shape == (N_TEST, 32, 32, 3)
    assert ds.train.dtype == np.float32 and ds.train_labels.dtype == np.int64
    assert not ds.is_binary
    rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    # pixel (h, w, c) of image n is byte c*1024 + h*32 + w of its row (the release's channel-major layout)
    want = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / np.float32(255)
    np.testing.assert_array_equal(ds.train, want[:18])
    np.testing.assert_array_equal(ds.valid, want[18:])
    np.testing.assert_array_equal(ds.train_labels, labels[:18])
    np.testing.assert_array_equal(ds.valid_labels, labels[18:])
    np.testing.assert_array_equal(ds.test_labels, batches["test_batch"][b"labels"])
    assert ds.train[3, 5, 7, 2] == rows[3, 2 * 1024 + 5 * 32 + 7] / np.float32(255)
    flat = D.load_dataset("cifar10", data_dir=tmp_path / "tfds", download=False)  # prepared: no files needed
    assert flat.train.shape == (18, 3072)
    np.testing.assert_array_equal(flat.train, ds.train.reshape(18, -1))


def test_cifar10_truncated_or_hostile_archive_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "t").mkdir()
    path = tmp_path / "t" / cifar10.ARCHIVE
    write_tarball(path, rng)
    path.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz is truncated or not a gzipped tar file .*"
                                        r"fetch cifar-10-python.tar.gz again \(expected 170498071 bytes\)"):
        D.load_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "t", download=False)
    write_tarball(path, rng, evil=True)
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR-10 batch .*refusing to load (__builtin__|builtins).print"):
        cifar10.splits_from_archive(path)


def test_cifar10_download_is_pinned_to_the_published_checksum():
    info = cifar10.Cifar10.url_infos["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert info.size == 170498071
    assert info.checksum == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
