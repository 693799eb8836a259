"""CIFAR-10 (Krizhevsky 2009) as a jaxvae TFDS builder: 32x32x3 uint8 images with labels 0-9.

Source: the standard python-pickle tarball ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/),
from ``manual_dir`` (the tarball, or its extracted ``cifar-10-batches-py`` folder), else downloaded by TFDS's
download manager and checked against the published size and SHA-256 (the value Keras' ``cifar10.load_data``
checks; MD5 c58f30108f718f92721af3b95e74349a on the CIFAR page). TFDS registers only the *binary* tarball's
checksum (url_checksums/cifar10.txt), so this one is pinned here.

Splits (fixed, in file order): train = the first 45000 images of data_batch_1..5, validation = the last
5000 (the last tenth of the training batches), test = test_batch (10000). Each batch is a pickled dict
{b"data": uint8 (N, 3072) in channel-major order R(32x32) G B, b"labels": [N ints]}; images are stored as
(32, 32, 3). The pickles are read with an unpickler that only builds dicts, lists, bytes and numpy arrays.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxvae.data import builders
from jaxvae.data.formats import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _SafeUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR batch needs (numpy arrays, bytes); anything else is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}  # py3 protocol-2 bytes

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _load_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)) from one pickled batch."""
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"{what}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{what}: expected a dict with b'data' and b'labels', got "
                        f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{what}: expected uint8 data (N, 3072) and N labels, got {data.dtype} "
                        f"{data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{what}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_archive(path: str | Path) -> dict[str, bytes]:
    """{batch name: pickled bytes} from the tarball or the extracted folder; DataError if truncated,
    corrupt or incomplete."""
    path = Path(path)
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if path.is_dir():
        found = {n: (path / n).read_bytes() for n in wanted if (path / n).is_file()}
    else:
        found = {}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    name = member.name.rsplit("/", 1)[-1]
                    if name in wanted and member.isfile():
                        found[name] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"cifar10: {path} is truncated or not a gzipped tar file ({type(e).__name__}: "
                            f"{e}); delete it and fetch {ARCHIVE} again (expected {SIZE} bytes)") from e
    missing = [n for n in wanted if n not in found]
    if missing:
        raise DataError(f"cifar10: {path} lacks {', '.join(missing)}; it is not a complete {ARCHIVE}")
    return found


def splits_from_archive(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "validation", "test": (images, labels)} with the fixed 90/10 train/validation cut."""
    raw = read_archive(path)
    parts = [_load_batch(raw[n], f"{path}:{n}") for n in TRAIN_BATCHES]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    cut = len(x) - len(x) // 10  # 45000 of 50000
    test = _load_batch(raw[TEST_BATCH], f"{path}:{TEST_BATCH}")
    return {"train": (x[:cut], y[:cut]), "validation": (x[cut:], y[cut:]), "test": test}


SIZE = 170498071
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


class Cifar10(builders.Builder):
    """CIFAR-10, 32x32x3 uint8 with labels: 45000 train / 5000 validation / 10000 test."""

    name = "jaxvae_cifar10"
    SOURCE = "cifar10"
    URL = "https://www.cs.toronto.edu/~kriz/"
    FILES = {"archive": ARCHIVE}
    CHECKSUMS = {ARCHIVE: (SIZE, SHA256)}
    NPZ_HELP = "is not supported; use the tarball"
    IMAGE_SHAPE = (32, 32, 3)
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put {ARCHIVE} (or its extracted {FOLDER} folder) here."

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
                "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            description="CIFAR-10: 32x32 colour images in 10 classes (python-pickle release).",
        )

    def _split_generators(self, dl_manager):
        manual = getattr(dl_manager, "_manual_dir", None)
        path = None
        if manual:
            folder = Path(manual)
            for cand in (folder / ARCHIVE, folder / FOLDER, folder / f"cifar10-{ARCHIVE}"):
                if cand.exists():
                    path = cand
                    break
        if path is None:
            path = self._download(dl_manager, manual)["archive"]
        return {name: self._generate_examples(*arrays) for name, arrays in splits_from_archive(path).items()}


builders.BUILDERS["cifar10"] = Cifar10  # jaxvae.data.loader imports this module for data.name=cifar10
