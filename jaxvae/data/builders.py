"""jaxvae's own TFDS builders: array_record files, `tfds.features.Tensor` features (no TensorFlow).

Each builder reads the standard raw files from `manual_dir` if they are there,
otherwise downloads them with TFDS's download manager (checksums from TFDS's
own registry), unless `download=False`. Examples carry an `index` feature so
readers can restore the original file order (TFDS shuffles records on write).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums

from jaxvae.data import formats
from jaxvae.data.formats import DataError

__all__ = ["BinarizedMnist", "Mnist", "FashionMnist", "BUILDERS", "prepare"]

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared logic: locate manual files or download them, parse, write examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SOURCE: str = ""  # jaxvae dataset name, e.g. "mnist"
    URL: str = ""  # base URL of the standard files
    FILES: dict[str, str] = {}  # role -> standard file name
    CHECKSUMS: dict[str, tuple[int, str]] = {}  # file name -> (size, sha256)
    NPZ_HELP: str = ""
    IMAGE_SHAPE = (28, 28, 1)

    def __init__(self, *, download: bool = True, **kwargs):
        self._allow_download = download
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
        return {
            cls.URL + name: tfds_checksums.UrlInfo(size=size, checksum=sha, filename=name)
            for name, (size, sha) in cls.CHECKSUMS.items()
        }

    @classmethod
    def file_help(cls, folder: str | os.PathLike | None) -> str:
        """Which files to fetch and where to put them."""
        names = ", ".join(cls.FILES.values())
        where = f"in {folder}" if folder else "in a folder passed as manual_dir"
        return (f"Fetch {names} from {cls.URL} (or one {cls.SOURCE}.npz {cls.NPZ_HELP}) and put them "
                f"{where}.")

    def _split_generators(self, dl_manager):
        manual = getattr(dl_manager, "_manual_dir", None)
        found = _find_files(Path(manual), self.SOURCE, self.FILES) if manual else None
        if found is None and manual and (Path(manual) / f"{self.SOURCE}.npz").is_file():
            splits = self._from_npz(formats.read_npz(Path(manual) / f"{self.SOURCE}.npz"))
        else:
            if found is None:
                found = self._download(dl_manager, manual)
            splits = self._from_files(found)
        return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

    def _download(self, dl_manager, manual) -> dict[str, Path]:
        if not self._allow_download:
            raise DataError(f"{self.SOURCE}: no local files and download=False. "
                            + self.file_help(manual))
        _check_reachable(self.URL, self.SOURCE, self.file_help(manual))
        try:
            paths = dl_manager.download({k: self.URL + f for k, f in self.FILES.items()})
        except Exception as e:  # network errors, checksum mismatches, ...
            raise DataError(f"{self.SOURCE}: download failed ({type(e).__name__}: {e}). "
                            + self.file_help(manual)) from e
        return {k: Path(os.fspath(p)) for k, p in paths.items()}

    def _generate_examples(self, images, labels=None):
        images = images.reshape((-1, *self.IMAGE_SHAPE))
        for i in range(len(images)):
            ex = {"image": images[i], "index": i}
            if labels is not None:
                ex["label"] = int(labels[i])
            yield i, ex

    def _from_files(self, paths: dict[str, Path]) -> dict[str, tuple]:
        raise NotImplementedError

    def _from_npz(self, arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
        raise NotImplementedError


def _check_reachable(url: str, source: str, help_text: str) -> None:
    """Fails fast (instead of TFDS's minutes of retries) when the host cannot be reached."""
    if any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        return  # direct connections may legitimately fail behind a proxy
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=10).close()
    except OSError as e:
        raise DataError(f"{source}: cannot reach {parts.hostname} to download ({e}). {help_text}") from e


def _find_files(folder: Path, source: str, files: dict[str, str]) -> dict[str, Path] | None:
    """Finds the standard files in `folder` (also `<source>-` prefixed, or not gzipped).

    Returns None if none is there; DataError if only some are.
    """
    if not folder.is_dir():
        return None
    found, missing = {}, []
    for role, name in files.items():
        stems = [name, name.removesuffix(".gz")]
        stems += [s.replace("-idx", ".idx") for s in stems if "-idx" in s]
        cands = [folder / (p + s) for s in stems for p in ("", f"{source}-", f"{source}_")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found[role] = hit
    if not found:
        return None
    if missing:
        raise DataError(f"{source}: {folder} has only some of the files; missing: {', '.join(missing)}. "
                        "Put all of them there.")
    return found


def _as_images(x: np.ndarray, what: str, binary: bool = False) -> np.ndarray:
    """Checks an array holds N 28x28 uint8 images (any of (N,784), (N,28,28), (N,28,28,1))."""
    x = np.asarray(x)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != 784 or x.shape[1:] not in {(784,), (28, 28), (28, 28, 1)}:
        raise DataError(f"{what}: wrong shape {x.shape}, expected (N, 784) or (N, 28, 28)")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
        if not np.all(x == np.round(x)):
            raise DataError(f"{what}: expected integer pixel values, got {x.dtype}")
    lo, hi = (x.min(), x.max()) if x.size else (0, 0)
    if binary and (lo < 0 or hi > 1 or not np.all((x == 0) | (x == 1))):
        raise DataError(f"{what}: values must be 0 or 1 (got range [{lo}, {hi}])")
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: pixel values must lie in [0, 255] (got range [{lo}, {hi}])")
    return x.astype(np.uint8).reshape(-1, 784)


class BinarizedMnist(Builder):
    """Statically binarized MNIST (Larochelle & Murray, 2011): 50000/10000/10000, pixels in {0, 1}."""

    name = "jaxvae_binarized_mnist"
    SOURCE = "binarized_mnist"
    URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
    FILES = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}
    CHECKSUMS = {  # from tensorflow_datasets' binarized_mnist/checksums.tsv
        "binarized_mnist_train.amat": (78400000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        "binarized_mnist_valid.amat": (15680000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        "binarized_mnist_test.amat": (15680000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    }
    NPZ_HELP = "holding uint8 arrays train (50000x784), valid and test"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put binarized_mnist_{train,valid,test}.amat or binarized_mnist.npz here."

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            homepage="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
            description="Statically binarized MNIST; pixels are 0 or 1.",
        )

    def _from_files(self, paths):
        return {split: (formats.read_amat(paths[key]),)
                for split, key in (("train", "train"), ("validation", "valid"), ("test", "test"))}

    def _from_npz(self, arrays):
        path = f"{self.SOURCE}.npz"
        if "valid" not in arrays and "validation" in arrays:
            arrays = {**arrays, "valid": arrays["validation"]}
        missing = [k for k in ("train", "valid", "test") if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; it has {sorted(arrays)}, "
                            "expected train, valid, test")
        return {split: (_as_images(arrays[key], f"{path}[{key!r}]", binary=True),)
                for split, key in (("train", "train"), ("validation", "valid"), ("test", "test"))}


class Mnist(Builder):
    """MNIST, grayscale 28x28 uint8 with labels: 60000 train / 10000 test."""

    name = "jaxvae_mnist"
    SOURCE = "mnist"
    URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # TFDS's mirror of yann.lecun.com
    FILES = _IDX_FILES
    CHECKSUMS = {  # from tensorflow_datasets' url_checksums/mnist.txt
        "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    }
    NPZ_HELP = "holding x_train, y_train, x_test, y_test (Keras layout) or train, test, train_labels, test_labels"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the four MNIST IDX files (or mnist.npz) here."

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
                "label": tfds.features.ClassLabel(num_classes=10),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
            description=f"{self.SOURCE}: grayscale 28x28 images with labels 0-9.",
        )

    def _from_files(self, paths):
        out = {}
        for split in ("train", "test"):
            x = formats.read_idx_images(paths[f"{split}_images"], (28, 28))
            y = formats.read_idx_labels(paths[f"{split}_labels"], 10)
            if len(x) != len(y):
                raise DataError(f"{self.SOURCE} {split}: {paths[f'{split}_images'].name} has {len(x)} images but "
                                f"{paths[f'{split}_labels'].name} has {len(y)} labels")
            out[split] = (x, y)
        return out

    def _from_npz(self, arrays):
        path = f"{self.SOURCE}.npz"
        out = {}
        for split in ("train", "test"):
            for xk, yk in ((f"x_{split}", f"y_{split}"), (split, f"{split}_labels")):
                if xk in arrays and yk in arrays:
                    break
            else:
                raise DataError(f"{path}: no {split} images and labels; it has {sorted(arrays)}, expected "
                                f"x_{split}/y_{split} or {split}/{split}_labels")
            x = _as_images(arrays[xk], f"{path}[{xk!r}]")
            y = np.asarray(arrays[yk]).reshape(-1)
            if len(x) != len(y) or (y.size and (y.min() < 0 or y.max() > 9)):
                raise DataError(f"{path}: {yk!r} must hold {len(x)} labels in 0..9, got shape {y.shape}")
            out[split] = (x, y.astype(np.int64))
        return out


class FashionMnist(Mnist):
    """Fashion-MNIST (Xiao et al., 2017): same layout and file names as MNIST."""

    name = "jaxvae_fashion_mnist"
    SOURCE = "fashion_mnist"
    URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    CHECKSUMS = {  # from tensorflow_datasets' url_checksums/fashion_mnist.txt
        "train-images-idx3-ubyte.gz": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the four Fashion-MNIST IDX files (or fashion_mnist.npz) here."


BUILDERS: dict[str, type[Builder]] = {
    "binarized_mnist": BinarizedMnist, "mnist": Mnist, "fashion_mnist": FashionMnist}


def prepare(source: str, data_dir: str | os.PathLike, *, manual_dir: str | os.PathLike | None = None,
            download: bool = True) -> Builder:
    """Builds (once; cached in `data_dir`) and returns the builder for `source`."""
    cls = BUILDERS[source]
    builder = cls(data_dir=os.fspath(data_dir), file_format="array_record", download=download)
    if manual_dir is not None and not Path(manual_dir).is_dir():
        raise DataError(f"{source}: manual_dir {manual_dir} is not a folder. " + cls.file_help(manual_dir))
    config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config)
    except DataError:
        raise
    except RuntimeError as e:  # TFDS may wrap our DataError; unwrap it.
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DataError):
            raise DataError(str(cause)) from None
        raise
    return builder
