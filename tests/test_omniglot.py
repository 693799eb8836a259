"""The IWAE paper's 28x28 Omniglot builder (jaxvae.data.omniglot) on a small chardata.mat generated with
scipy in the real file's layout (784 x N columns, Fortran-order images, one-hot alphabet targets)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from jaxvae import data as D
from jaxvae.data import DataError
from jaxvae.data.omniglot import SHUFFLE_SEED, VALIDATION_SIZE

N_TRAIN, N_TEST = VALIDATION_SIZE + 55, 10


def _image(n: int) -> np.ndarray:
    """A distinct, asymmetric 28x28 grey image per index (pixel (r, c) depends on r, c and n)."""
    r, c = np.mgrid[:28, :28]
    return ((r * 3 + c * 7 + n * 11) % 256) / 255.0


def _columns(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> 784 x N columns as chardata.mat stores them (each image flattened in Fortran order)."""
    return np.stack([im.reshape(784, order="F") for im in images], axis=1)


def _onehot(labels, n_classes=50):
    y = np.zeros((n_classes, len(labels)))
    y[labels, np.arange(len(labels))] = 1
    return y


@pytest.fixture()
def chardata(tmp_path):
    train = np.stack([_image(n) for n in range(N_TRAIN)])
    test = np.stack([_image(10_000 + n) for n in range(N_TEST)])
    folder = tmp_path / "manual"
    folder.mkdir()
    scipy.io.savemat(folder / "chardata.mat", {
        "data": _columns(train), "testdata": _columns(test),
        "target": _onehot(np.arange(N_TRAIN) % 50), "testtarget": _onehot(np.arange(N_TEST) % 50)})
    return folder, train, test


def test_omniglot_shapes_order_and_split(chardata, tmp_path):
    """Splits 55 / 1345 / 10 of 28x28 images; images come back upright (the columns' Fortran order undone),
    the training set shuffled by RandomState(SHUFFLE_SEED) with the last 1345 held out, the test set in file
    order; pixels are the file's values to 1/255 (stored as uint8)."""
    folder, train, test = chardata
    ds = D.load_dataset("omniglot", data_dir=tmp_path / "tfds", manual_dir=folder, download=False)
    assert ds.image_shape == (28, 28, 1)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((55, 784), (VALIDATION_SIZE, 784), (N_TEST, 784))
    perm = np.random.RandomState(SHUFFLE_SEED).permutation(N_TRAIN)
    np.testing.assert_allclose(ds.train, train[perm[:55]].reshape(55, 784), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(ds.valid, train[perm[55:]].reshape(-1, 784), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(ds.test, test.reshape(N_TEST, 784), atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(ds.train_labels, perm[:55] % 50)
    np.testing.assert_array_equal(ds.test_labels, np.arange(N_TEST) % 50)
    with pytest.raises(DataError, match="fixed validation split of 1345"):
        D.load_dataset("omniglot", data_dir=tmp_path / "tfds", manual_dir=folder, valid_size=400)


def test_omniglot_truncated_file_is_a_clear_error(chardata, tmp_path):
    folder, _, _ = chardata
    path = folder / "chardata.mat"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"chardata\.mat.*(truncated|readable)"):
        D.load_dataset("omniglot", data_dir=tmp_path / "tfds", manual_dir=folder, download=False)


def test_omniglot_missing_file_names_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="chardata.mat"):
        D.load_dataset("omniglot", data_dir=tmp_path / "tfds", manual_dir=empty, download=False)
