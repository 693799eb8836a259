"""Tests for jaxvae.data: raw-file parsers, TFDS builders (no TensorFlow, no network), loader, batching."""

from __future__ import annotations

import gzip
import importlib.util
import socket
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvae import data as D
from jaxvae.data import builders, formats
from jaxvae.data import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: any outgoing connection fails at once."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- file writers

def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist(folder: Path, rng, n_train=30, n_test=12, prefix="", gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
              for split, n in (("train", n_train), ("t10k", n_test))}
    for split, (x, y) in arrays.items():
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte{ext}", x, gz)
        write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte{ext}", y, gz)
    return arrays


def write_amat(path: Path, x: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(map(str, row)) for row in x) + "\n")


def flat(x):
    return x.reshape(len(x), -1).astype(np.float32)


# ---------------------------------------------------------------- parsers

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, gz, dtype):
    x = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5) if dtype != np.uint8 else \
        np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    got = formats.read_idx(write_idx(tmp_path / "a.idx", x, gz))
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, x)


@pytest.mark.skipif(not (SHARED / "mnist-t10k-images-idx3-ubyte.gz").exists(), reason="shared MNIST files absent")
def test_real_mnist_test_files_parse():
    x = formats.read_idx_images(SHARED / "mnist-t10k-images-idx3-ubyte.gz")
    y = formats.read_idx_labels(SHARED / "mnist-t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))
    assert abs(x.mean() / 255 - 0.1325) < 0.001  # the well-known MNIST test-set pixel mean


def test_amat_roundtrip_and_blank_lines(tmp_path):
    x = np.random.default_rng(0).integers(0, 2, (7, 784), dtype=np.uint8)
    write_amat(tmp_path / "a.amat", x)
    np.testing.assert_array_equal(formats.read_amat(tmp_path / "a.amat"), x)
    (tmp_path / "b.amat").write_text("1 0.0 1\n\n0 1 1.0\n")  # general (slow) path
    np.testing.assert_array_equal(formats.read_amat(tmp_path / "b.amat", dim=3), [[1, 0, 1], [0, 1, 1]])


def test_parser_errors(tmp_path):
    x = np.zeros((4, 28, 28), np.uint8)
    raw = write_idx(tmp_path / "x.idx", x, gz=False).read_bytes()
    (tmp_path / "cut.idx").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"cut.idx: truncated IDX file: header declares shape \(4, 28, 28\)"):
        formats.read_idx(tmp_path / "cut.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DataError, match="not an IDX file \\(bad magic number 0x12340803"):
        formats.read_idx(tmp_path / "bad.idx")
    gz = write_idx(tmp_path / "x.gz", x).read_bytes()
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="cut.gz: truncated gzip file"):
        formats.read_idx(tmp_path / "cut.gz")
    write_idx(tmp_path / "small.gz", np.zeros((4, 20, 20), np.uint8))
    with pytest.raises(DataError, match=r"wrong image shape \(20, 20\), expected \(28, 28\)"):
        formats.read_idx_images(tmp_path / "small.gz")
    write_idx(tmp_path / "lab.gz", np.array([0, 3, 12], np.uint8))
    with pytest.raises(DataError, match=r"labels outside \[0, 10\)"):
        formats.read_idx_labels(tmp_path / "lab.gz")
    with pytest.raises(DataError, match="nothere.gz: file not found"):
        formats.read_idx(tmp_path / "nothere.gz")
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="z.npz: truncated or corrupt .npz file"):
        formats.read_npz(tmp_path / "z.npz")


# ---------------------------------------------------------------- builders via load_dataset

def test_mnist_idx_roundtrip(tmp_path):
    arrays = write_mnist(tmp_path / "manual", np.random.default_rng(1))
    ds = D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual", download=False,
                        valid_size=5)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["t10k"]
    assert ds.image_shape == (28, 28, 1) and ds.name == "mnist" and not ds.is_binary
    for got in (ds.train, ds.valid, ds.test):
        assert got.dtype == np.float32 and got.shape[1] == 784
    np.testing.assert_array_equal(ds.train, flat(xtr[:25]) / 255)  # order preserved; last 5 -> valid
    np.testing.assert_array_equal(ds.valid, flat(xtr[25:]) / 255)
    np.testing.assert_array_equal(ds.test, flat(xte) / 255)
    np.testing.assert_array_equal(ds.train_labels, ytr[:25])
    np.testing.assert_array_equal(ds.valid_labels, ytr[25:])
    np.testing.assert_array_equal(ds.test_labels, yte)
    assert ds.train_labels.dtype == np.int64
    assert "tensorflow" not in sys.modules
    # Second load reuses the prepared array_record files (manual files no longer needed).
    for f in (tmp_path / "manual").iterdir():
        f.unlink()
    again = D.load_dataset("mnist", data_dir=tmp_path / "tfds", download=False, valid_size=5)
    np.testing.assert_array_equal(again.train, ds.train)


def test_fashion_mnist_prefixed_uncompressed_files(tmp_path):
    arrays = write_mnist(tmp_path / "m", np.random.default_rng(2), prefix="fashion_mnist-", gz=False)
    ds = D.load_dataset("fashion_mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False,
                        valid_size=0)
    np.testing.assert_array_equal(ds.train, flat(arrays["train"][0]) / 255)
    assert ds.valid.shape == (0, 784) and ds.test.shape == (12, 784)


def test_builder_directly(tmp_path):
    write_mnist(tmp_path / "m", np.random.default_rng(3))
    b = builders.prepare("mnist", tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)
    assert b.info.splits["train"].num_examples == 30 and b.info.splits["test"].num_examples == 12
    assert b.info.file_format.value == "array_record"
    ex = b.as_data_source(split="test")[0]
    assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
    assert "tensorflow" not in sys.modules


def test_mnist_keras_npz(tmp_path):
    rng = np.random.default_rng(4)
    x_train, x_test = rng.integers(0, 256, (20, 28, 28), np.uint8), rng.integers(0, 256, (6, 28, 28), np.uint8)
    y_train, y_test = rng.integers(0, 10, 20), rng.integers(0, 10, 6)
    (tmp_path / "m").mkdir()
    np.savez(tmp_path / "m" / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False,
                        valid_size=4)
    np.testing.assert_array_equal(ds.valid, flat(x_train[16:]) / 255)
    np.testing.assert_array_equal(ds.test_labels, y_test)


def test_binarized_amat_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    x = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8) for s, n in (("train", 20), ("valid", 6), ("test", 7))}
    (tmp_path / "m").mkdir()
    for s, arr in x.items():
        write_amat(tmp_path / "m" / f"binarized_mnist_{s}.amat", arr)
    ds = D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)
    assert ds.is_binary and ds.image_shape == (28, 28, 1) and ds.train_labels is None
    for s in x:
        np.testing.assert_array_equal(getattr(ds, s), x[s].astype(np.float32))
    assert "tensorflow" not in sys.modules


def test_binarized_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(6)
    x = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8) for s, n in (("train", 9), ("valid", 3), ("test", 4))}
    (tmp_path / "m").mkdir()
    np.savez(tmp_path / "m" / "binarized_mnist.npz", **x)
    ds = D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)
    for s in x:
        np.testing.assert_array_equal(getattr(ds, s), x[s].astype(np.float32))
    with pytest.raises(DataError, match="fixed validation split of 3 examples"):
        D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", download=False, valid_size=10)


@pytest.mark.skipif(not (SHARED / "binarized_mnist.npz").exists(), reason="shared binarized_mnist.npz absent")
def test_real_binarized_mnist(tmp_path):
    b = builders.prepare("binarized_mnist", tmp_path, manual_dir=SHARED, download=False)
    assert {s: v.num_examples for s, v in b.info.splits.items()} == {"train": 50000, "validation": 10000,
                                                                      "test": 10000}
    ds = D.load_dataset("binarized_mnist", data_dir=tmp_path, download=False)
    assert ds.train.shape == (50000, 784) and ds.valid.shape == (10000, 784) and ds.test.shape == (10000, 784)
    assert ds.is_binary and abs(ds.train.mean() - 0.1306) < 0.001
    assert "tensorflow" not in sys.modules


# ---------------------------------------------------------------- errors

def test_missing_files_no_download(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "empty", download=False)
    msg = str(e.value)
    assert "no local files and download=False" in msg
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert f"put them in {tmp_path / 'empty'}" in msg
    with pytest.raises(DataError, match=f"put them in {tmp_path / 'tfds' / 'downloads' / 'manual'}"):
        D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", download=False)
    with pytest.raises(DataError, match="manual_dir .*nope is not a folder"):
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "nope", download=False)


def test_download_unreachable_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot reach www.cs.toronto.edu to download .*binarized_mnist_train.amat"):
        D.load_dataset("binarized_mnist", data_dir=tmp_path, download=True)


def test_download_branch_uses_standard_urls(tmp_path, monkeypatch):
    """The online path (network faked): standard URLs with TFDS's registered checksums, files then parsed."""
    arrays = write_mnist(tmp_path / "served", np.random.default_rng(11))
    requested = []

    def fake_download(self, urls):
        requested.extend(urls.values())
        return {k: tmp_path / "served" / url.rsplit("/", 1)[1] for k, url in urls.items()}

    monkeypatch.setattr(builders, "_check_reachable", lambda *a: None)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    ds = D.load_dataset("mnist", data_dir=tmp_path / "tfds", download=True, valid_size=3)
    np.testing.assert_array_equal(ds.test, flat(arrays["t10k"][0]) / 255)
    base = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert sorted(requested) == sorted(base + f for f in builders.Mnist.FILES.values())
    assert set(builders.Mnist.url_infos) == set(requested)
    assert builders.Mnist.url_infos[base + "train-images-idx3-ubyte.gz"].checksum.startswith("440fcabf")


def test_partial_files(tmp_path):
    write_mnist(tmp_path / "m", np.random.default_rng(7))
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="has only some of the files; missing: t10k-labels-idx1-ubyte.gz"):
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)


def test_truncated_file(tmp_path):
    write_mnist(tmp_path / "m", np.random.default_rng(8), gz=False)
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated IDX file: header declares shape "
                                        r"\(30, 28, 28\) \(23520 bytes of data\) but only 4984 bytes follow"):
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)
    x = np.zeros((5, 784), np.uint8)
    (tmp_path / "b").mkdir()
    for s in ("train", "valid", "test"):
        write_amat(tmp_path / "b" / f"binarized_mnist_{s}.amat", x)
    f = tmp_path / "b" / "binarized_mnist_valid.amat"
    f.write_text(f.read_text()[:-1000])
    with pytest.raises(DataError, match=r"valid.amat: wrong shape: example 5 has \d+ values, expected 784 "
                                        r"\(truncated file\?\)"):
        D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "b", download=False)


def test_wrong_shape(tmp_path):
    (tmp_path / "m").mkdir()
    rng = np.random.default_rng(9)
    for split, n in (("train", 6), ("t10k", 3)):
        write_idx(tmp_path / "m" / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 32, 32), np.uint8))
        write_idx(tmp_path / "m" / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: wrong image shape \(32, 32\), expected "
                                        r"\(28, 28\)"):
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "b" / "binarized_mnist.npz", train=np.zeros((4, 100), np.uint8),
             valid=np.zeros((2, 784), np.uint8), test=np.zeros((2, 784), np.uint8))
    with pytest.raises(DataError, match=r"binarized_mnist.npz\['train'\]: wrong shape \(4, 100\), expected "
                                        r"\(N, 784\) or \(N, 28, 28\)"):
        D.load_dataset("binarized_mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "b", download=False)


def test_images_labels_count_mismatch(tmp_path):
    write_mnist(tmp_path / "m", np.random.default_rng(10))
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz has 12 images but t10k-labels-idx1-ubyte.gz "
                                        "has 11 labels"):
        D.load_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m", download=False)


def test_unknown_names_and_options(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'; valid names: digits, toy_3x3, factors_toy, dsprites, "
                                        "binarized_mnist, mnist, fashion_mnist, omniglot, cifar10, tfds:<name>"):
        D.load_dataset("cifar", data_dir=tmp_path)
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz: no such TFDS dataset"):
        D.load_dataset("tfds:no_such_dataset_xyz", data_dir=tmp_path)
    with pytest.raises(DataError, match="binarize='sometimes': expected one of none, static, dynamic"):
        D.load_dataset("digits", binarize="sometimes")
    assert issubclass(DataError, ValueError)
    assert set(D.DATASET_NAMES[4:-1]) == set(builders.BUILDERS)  # after digits, toy_3x3, factors_toy, dsprites


# ---------------------------------------------------------------- tfds:<name>

class JaxvaeTestTabular(tfds.core.GeneratorBasedBuilder):
    """A non-image dataset."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "test": self._generate_examples(2)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"x": np.full(3, i, np.float32), "label": i % 2}


class JaxvaeTestTensorImages(JaxvaeTestTabular):
    """Tiny 6x6 uint8 images stored as Tensor features (needs no TensorFlow)."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "pixels": tfds.features.Tensor(shape=(6, 6), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20), "test": self._generate_examples(5)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"pixels": np.full((6, 6), 10 * i, np.uint8), "label": i % 3}


class JaxvaeTestPngImages(JaxvaeTestTensorImages):
    """tfds.features.Image: PNG encoding needs TensorFlow."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 6, 1)), "label": tfds.features.ClassLabel(num_classes=3)}))

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((6, 6, 1), 10 * i, np.uint8), "label": i % 3}


def test_tfds_tensor_images(tmp_path):
    ds = D.load_dataset("tfds:jaxvae_test_tensor_images", data_dir=tmp_path, image_key="pixels", valid_size=4)
    assert ds.image_shape == (6, 6, 1) and ds.name == "tfds:jaxvae_test_tensor_images"
    assert ds.train.shape == (16, 36) and ds.valid.shape == (4, 36) and ds.test.shape == (5, 36)
    assert ds.train.dtype == np.float32 and 0 <= ds.train.min() and ds.train.max() <= 1
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.train, ds.valid])[:, 0] * 255), 10 * np.arange(20))
    assert set(ds.test_labels) <= {0, 1, 2}
    with pytest.raises(DataError, match="feature 'image' is not a fixed-size image .*pass image_key= one of "
                                        r"\['pixels'\]"):
        D.load_dataset("tfds:jaxvae_test_tensor_images", data_dir=tmp_path)


def test_tfds_non_image_dataset(tmp_path):
    with pytest.raises(DataError, match=r"tfds:jaxvae_test_tabular has no image-like feature \(features: x: "
                                        r"Tensor\(3,\), label: ClassLabel"):
        D.load_dataset("tfds:jaxvae_test_tabular", data_dir=tmp_path)


def test_tfds_not_prepared_without_download(tmp_path):
    with pytest.raises(DataError, match="tfds:jaxvae_test_tensor_images is not prepared in .* and download=False"):
        D.load_dataset("tfds:jaxvae_test_tensor_images", data_dir=tmp_path, image_key="pixels", download=False)


@pytest.mark.skipif(HAS_TF, reason="TensorFlow is installed")
def test_tfds_needs_tensorflow(tmp_path):
    with pytest.raises(DataError, match="tfds:jaxvae_test_png_images: preparing this TFDS dataset needs "
                                        "TensorFlow, which is not installed"):
        D.load_dataset("tfds:jaxvae_test_png_images", data_dir=tmp_path)


# ---------------------------------------------------------------- digits default and statistics

def test_digits_default():
    ds = D.load_dataset("digits")
    assert ds.train.shape == (1397, 64) and ds.valid.shape == (200, 64) and ds.test.shape == (200, 64)
    assert ds.image_shape == (8, 8, 1) and ds.train.dtype == np.float32 and not ds.is_binary
    assert ds.train.min() == 0 and ds.train.max() == 1
    assert ds.train_labels.shape == (1397,) and set(np.unique(ds.test_labels)) <= set(range(10))
    again = D.load_dataset("digits")
    np.testing.assert_array_equal(ds.valid, again.valid)
    assert "tensorflow" not in sys.modules


def test_static_binarization():
    grey = D.load_dataset("digits", binarize="dynamic")
    a = D.load_dataset("digits", binarize="static", seed=1)
    b = D.load_dataset("digits", binarize="static", seed=1)
    c = D.load_dataset("digits", binarize="static", seed=2)
    assert a.is_binary and not grey.is_binary
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    se = np.sqrt(np.sum(grey.train * (1 - grey.train))) / grey.train.size
    assert abs(a.train.mean() - grey.train.mean()) < 5 * se


def test_pixel_statistics():
    x = np.array([[0, 1, 0.5], [0, 1, 0.25]], np.float32)
    m = D.pixel_mean(x)
    np.testing.assert_allclose(m, [1e-3, 1 - 1e-3, 0.375], rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-D.pixel_logits(x))), m, rtol=1e-5)
    assert np.all(np.isfinite(D.pixel_logits(x, eps=1e-6)))


# ---------------------------------------------------------------- batching

def test_binarize_batch():
    p = jnp.linspace(0.0, 1.0, 1000).reshape(10, 100)
    k1, k2 = jax.random.split(jax.random.key(0))
    x1 = D.binarize_batch(k1, p)
    assert x1.dtype == jnp.float32 and x1.shape == p.shape
    assert set(np.unique(np.asarray(x1))) <= {0.0, 1.0}
    np.testing.assert_array_equal(x1, jax.jit(D.binarize_batch)(k1, p))  # same key -> same draw
    assert not np.array_equal(x1, D.binarize_batch(k2, p))
    assert np.all(np.asarray(x1)[p == 0] == 0) and np.all(np.asarray(x1)[p == 1] == 1)
    big = jnp.full((200, 784), 0.3)
    mean = float(D.binarize_batch(k2, big).mean())
    se = np.sqrt(0.3 * 0.7 / big.size)
    assert abs(mean - 0.3) < 5 * se


def test_epoch_permutation_and_batches():
    n, d, bs = 103, 3, 10
    x = jnp.tile(jnp.arange(n, dtype=jnp.float32)[:, None], (1, d))
    k1, k2 = jax.random.split(jax.random.key(1))
    perm = np.asarray(D.epoch_permutation(k1, n))
    assert sorted(perm) == list(range(n))
    b1 = D.epoch_batches(k1, x, bs)
    assert b1.shape == (n // bs, bs, d)
    ids = np.asarray(b1[..., 0]).ravel()
    assert len(set(ids)) == len(ids) == 100 and set(ids) <= set(range(n))
    np.testing.assert_array_equal(b1, D.epoch_batches(k1, x, bs))
    assert not np.array_equal(b1, D.epoch_batches(k2, x, bs))
    full = D.epoch_batches(k2, x[:100], bs)  # divisible: every example exactly once
    assert sorted(np.asarray(full[..., 0]).ravel()) == list(range(100))

    @jax.jit
    def epoch_sums(key, x):  # usable inside jit + scan
        return jax.lax.scan(lambda c, b: (c + b.sum(), None), 0.0, D.epoch_batches(key, x, bs))[0]
    assert float(epoch_sums(k1, x)) == float(b1.sum())


@settings(deadline=None)
@given(n=st.integers(0, 40), bs=st.integers(1, 12), as_numpy=st.booleans())
def test_eval_batches_visit_each_example_once(n, bs, as_numpy):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 1
    batches, mask = D.eval_batches(x if as_numpy else jnp.asarray(x), bs)
    assert batches.shape == (-(-n // bs), bs, 2) and mask.shape == batches.shape[:2] and mask.dtype == jnp.bool_
    visited = np.asarray(batches)[np.asarray(mask)]
    np.testing.assert_array_equal(visited, x)
    assert np.all(np.asarray(batches)[~np.asarray(mask)] == 0)


def test_iterate_host_batches():
    x = np.arange(23)[:, None]
    run = lambda **kw: [b[:, 0].tolist() for b in D.iterate_host_batches(x, 5, **kw)]
    e0 = run(seed=0, epoch=0)
    assert len(e0) == 4 and all(len(b) == 5 for b in e0) and len(set(sum(e0, []))) == 20
    assert e0 == run(seed=0, epoch=0)
    assert e0 != run(seed=0, epoch=1) and e0 != run(seed=1, epoch=0)
    full = run(seed=0, epoch=0, drop_remainder=False)
    assert [len(b) for b in full] == [5, 5, 5, 5, 3] and sorted(sum(full, [])) == list(range(23))


def test_toy_3x3_is_generated_with_labels():
    ds = D.load_dataset("toy_3x3")
    assert ds.image_shape == (3, 3, 1)
    for x, y in ((ds.train, ds.train_labels), (ds.valid, ds.valid_labels), (ds.test, ds.test_labels)):
        assert x.shape == (128, 9) and x.dtype == np.float32 and y.shape == (128,)
        assert 0.0 <= x.min() and x.max() <= 1.0
        # Each image is its pattern (ink 0.9, background 0.1) plus N(0, 0.05^2) noise: the pattern's
        # pixels are the 3 brightest of every image (noise of 0.8 would be a 16-sigma event).
        bright = np.sort(np.argsort(x, axis=1)[:, -3:], axis=1)
        assert len({tuple(b) for b in bright}) == 8
    assert not np.array_equal(ds.train, ds.test)  # different seeds per split
