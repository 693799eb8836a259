"""The 28x28 Omniglot of Burda, Grosse & Salakhutdinov (2015) as a jaxvae TFDS builder (no TensorFlow).

Source: ``chardata.mat`` of the IWAE paper's code (https://github.com/yburda/iwae, datasets/OMNIGLOT), a
MATLAB file holding ``data`` (784 x 24345) and ``testdata`` (784 x 8070) with one image per column and pixel
values in [0, 1], and ``target``/``testtarget`` (50 x N one-hot alphabet labels). As in the paper's code,
each column is read as a 28x28 image in Fortran (column-major) order; the training images are shuffled
with a fixed seed (``SHUFFLE_SEED``) and the last ``VALIDATION_SIZE`` = 1345 of them are held out for
validation: splits train 23000 / validation 1345 / test 8070. The images are grey levels (stored as
uint8 = round(255 x value)); the paper binarizes them dynamically (``data.binarize=dynamic``).

The file is read from ``manual_dir`` (``chardata.mat``, or ``omniglot-chardata.mat``) when it is there,
else downloaded from ``URL`` by TFDS's download manager. No checksum is registered: the file could not be
downloaded where this builder was written (no network), so its sha256 was never seen; instead the
downloaded file's layout is checked (the arrays, their shapes and value range), and a missing, truncated
or malformed file is a DataError naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxvae.data.builders import BUILDERS, Builder
from jaxvae.data.formats import DataError

__all__ = ["Omniglot", "read_chardata", "VALIDATION_SIZE", "SHUFFLE_SEED"]

VALIDATION_SIZE = 1345
SHUFFLE_SEED = 123  # the fixed shuffle of the training images before the validation split is taken
NUM_ALPHABETS = 50


def _images(columns: np.ndarray, path, key: str) -> np.ndarray:
    """784 x N columns -> (N, 28, 28) images: each column reshaped in Fortran order (the paper's code)."""
    a = np.asarray(columns)
    if a.ndim != 2 or a.shape[0] != 784:
        raise DataError(f"{path}: {key!r} has shape {a.shape}; expected 784 x N (one 28x28 image per column)")
    a = a.astype(np.float64)
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1):
        raise DataError(f"{path}: {key!r} holds values outside [0, 1]")
    return a.T.reshape(-1, 28, 28).transpose(0, 2, 1)


def _labels(onehot, n: int, path, key: str) -> np.ndarray:
    y = np.asarray(onehot)
    if y.ndim != 2 or y.shape[1] != n or y.shape[0] > NUM_ALPHABETS:
        raise DataError(f"{path}: {key!r} has shape {y.shape}; expected (alphabets <= {NUM_ALPHABETS}) x {n}")
    return y.argmax(axis=0).astype(np.int64)


def read_chardata(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "validation", "test"}`` -> (uint8 images (N, 28, 28), alphabet labels) from chardata.mat."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; fetch chardata.mat from {Omniglot.URL}chardata.mat")
    try:
        raw = scipy.io.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - truncated or not a MATLAB file
        raise DataError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}); it may be truncated: "
                        f"fetch chardata.mat again from {Omniglot.URL}chardata.mat") from None
    missing = [k for k in ("data", "testdata", "target", "testtarget") if k not in raw]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} array(s) (it has "
                        f"{', '.join(sorted(k for k in raw if not k.startswith('__')))}); expected the IWAE "
                        "paper's chardata.mat")
    train = _images(raw["data"], path, "data")
    test = _images(raw["testdata"], path, "testdata")
    y_train = _labels(raw["target"], len(train), path, "target")
    y_test = _labels(raw["testtarget"], len(test), path, "testtarget")
    if len(train) <= VALIDATION_SIZE:
        raise DataError(f"{path}: {len(train)} training images; more than {VALIDATION_SIZE} are needed "
                        "(the validation split)")
    perm = np.random.RandomState(SHUFFLE_SEED).permutation(len(train))
    train, y_train = train[perm], y_train[perm]
    to_u8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    cut = len(train) - VALIDATION_SIZE
    return {"train": (to_u8(train[:cut]), y_train[:cut]),
            "validation": (to_u8(train[cut:]), y_train[cut:]),
            "test": (to_u8(test), y_test)}


class Omniglot(Builder):
    """28x28 Omniglot (Burda et al. 2015): 23000 / 1345 / 8070 grey-level images with alphabet labels."""

    name = "jaxvae_omniglot"
    SOURCE = "omniglot"
    URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/"
    FILES = {"chardata": "chardata.mat"}
    CHECKSUMS = {}  # not registered: never downloaded here (see the module docstring)
    NPZ_HELP = "(no .npz form; use chardata.mat)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the IWAE paper's chardata.mat here."

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
                "label": tfds.features.ClassLabel(num_classes=NUM_ALPHABETS),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            homepage="https://github.com/yburda/iwae",
            description="28x28 Omniglot of the IWAE paper (chardata.mat): grey levels, alphabet labels.",
        )

    def _from_files(self, paths):
        return read_chardata(paths["chardata"])

    def _from_npz(self, arrays):
        raise DataError(f"{self.SOURCE}: an omniglot.npz is not supported; put chardata.mat in manual_dir")


BUILDERS["omniglot"] = Omniglot
