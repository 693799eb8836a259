"""`load_dataset`: every dataset as float32 (N, D) arrays in [0, 1], plus pixel statistics."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import numpy as np

from jaxvae.data.formats import DataError

__all__ = ["Dataset", "load_dataset", "default_data_dir", "pixel_mean", "pixel_logits", "DATASET_NAMES"]

_OWN = ("binarized_mnist", "mnist", "fashion_mnist")  # jaxvae.data.builders.BUILDERS (imported lazily)
DATASET_NAMES = ("digits", "toy_3x3", "factors_toy", "dsprites", *_OWN, "tfds:<name>")
_BINARIZE = ("none", "static", "dynamic")
_VALID_SPLITS = ("validation", "valid", "val")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Flattened float32 splits with values in [0, 1]; `image_shape` is (H, W, C)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int, int]
    name: str
    is_binary: bool
    train_labels: np.ndarray | None = None
    valid_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    # Ground-truth factors of variation, (N, F) float32 per split, for data sets generated from known
    # factors (factors_toy); column f is named factor_names[f]. None elsewhere.
    train_factors: np.ndarray | None = None
    valid_factors: np.ndarray | None = None
    test_factors: np.ndarray | None = None
    factor_names: tuple[str, ...] | None = None


def default_data_dir() -> str:
    """$JAXVAE_DATA_DIR, else ~/tensorflow_datasets."""
    return os.environ.get("JAXVAE_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def load_dataset(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                 download: bool = True, valid_size: int | None = None, image_key: str = "image",
                 binarize: str = "none", seed: int = 0) -> Dataset:
    """Loads `name` (one of DATASET_NAMES) as a `Dataset`.

    binarize: "none" | "static" (one Bernoulli draw with `seed`, stored) | "dynamic"
    (grey levels returned; binarize per batch with `binarize_batch`).
    valid_size: validation examples carved off the end of train when the dataset has no
    validation split (mnist, fashion_mnist: 10000; digits: 200).
    """
    if binarize not in _BINARIZE:
        raise DataError(f"binarize={binarize!r}: expected one of {', '.join(_BINARIZE)}")
    if valid_size is not None and valid_size < 0:
        raise DataError(f"valid_size={valid_size} must be >= 0")
    data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    factors, factor_names = (None, None, None), None
    if name == "digits":
        splits, labels, shape = _load_digits(valid_size)
    elif name == "toy_3x3":
        splits, labels, shape = _load_toy_3x3()
    elif name == "factors_toy":
        from jaxvae.data.factors_toy import FACTOR_NAMES, load_factors_toy

        splits, factors, shape = load_factors_toy()
        labels, factor_names = [f[:, 2].astype(np.int64) for f in factors], FACTOR_NAMES  # orientation
    elif name == "dsprites":
        from jaxvae.data.factors_toy import DSPRITES_FACTORS

        splits, factors, shape = _load_dsprites(data_dir, download)
        labels, factor_names = [f[:, 0].astype(np.int64) for f in factors], DSPRITES_FACTORS  # shape
    elif name in _OWN:
        splits, labels, shape = _load_own(name, data_dir, manual_dir, download, valid_size)
    elif name.startswith("tfds:") and len(name) > 5:
        splits, labels, shape = _load_tfds(name[5:], data_dir, manual_dir, download, valid_size, image_key)
    else:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if binarize == "static":
        rng = np.random.default_rng(seed)
        splits = [(rng.random(x.shape, dtype=np.float32) < x).astype(np.float32) for x in splits]
    is_binary = all(np.all((x == 0) | (x == 1)) for x in splits)
    return Dataset(*splits, image_shape=shape, name=name, is_binary=bool(is_binary),
                   train_labels=labels[0], valid_labels=labels[1], test_labels=labels[2],
                   train_factors=factors[0], valid_factors=factors[1], test_factors=factors[2],
                   factor_names=factor_names)


def pixel_mean(x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Per-pixel mean over the examples of `x`, clipped to [eps, 1 - eps]."""
    return np.clip(np.mean(np.asarray(x, np.float64), axis=0), eps, 1 - eps).astype(np.float32)


def pixel_logits(x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """log(m / (1 - m)) of the clipped pixel mean: the decoder output-bias init of the IWAE paper."""
    m = np.clip(np.mean(np.asarray(x, np.float64), axis=0), eps, 1 - eps)
    return (np.log(m) - np.log1p(-m)).astype(np.float32)


def _carve(x, y, valid_size: int, what: str):
    """Splits the last `valid_size` examples off (x, y)."""
    if valid_size >= len(x):
        raise DataError(f"{what}: valid_size={valid_size} must be smaller than the {len(x)} training examples")
    cut = len(x) - valid_size
    labels = (None, None) if y is None else (y[:cut], y[cut:])
    return (x[:cut], x[cut:]), labels


def _load_digits(valid_size):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    n_test = 200
    (train, valid), (ytr, yva) = _carve(x[:-n_test], y[:-n_test], 200 if valid_size is None else valid_size,
                                        "digits")
    return [train, valid, x[-n_test:]], [ytr, yva, y[-n_test:]], (8, 8, 1)


def _load_toy_3x3():
    """The worked example's 3x3 images: noisy bars and diagonals (jaxvae.toy), 128/128/128 examples."""
    from jaxvae.toy import toy_dataset

    splits = [toy_dataset(seed) for seed in (0, 1, 2)]
    labels = [np.repeat(np.arange(8), len(x) // 8) for x in splits]
    return splits, labels, (3, 3, 1)


DSPRITES_SIZES = (50000, 5000, 5000)  # a fixed random subset of dSprites' 737280 images (seed 0)


def _load_dsprites(data_dir, download):
    """dSprites (Matthey et al. 2017) through TFDS's ``dsprites`` builder in array_record format: a fixed
    random subset (``DSPRITES_SIZES``) of its one split, 64x64 binary images, factors = the five
    ``label_*`` indices (shape, scale, orientation, x, y). Preparing it needs TensorFlow (its images are
    PNG-encoded); reading a prepared copy does not."""
    import tensorflow_datasets as tfds

    what = "dsprites"
    try:
        builder = tfds.builder("dsprites", data_dir=data_dir, file_format="array_record")
    except Exception as e:
        raise DataError(f"{what}: cannot create the TFDS builder ({type(e).__name__}: {_first_line(e)})") from e
    if not builder.is_prepared():
        if not download:
            raise DataError(f"{what} is not prepared in {data_dir} and download=False; prepare it there first "
                            "(tfds.builder('dsprites', file_format='array_record').download_and_prepare(), "
                            "which needs TensorFlow)")
        if importlib.util.find_spec("tensorflow") is None:
            raise DataError(_TF_MSG.format(what=what))
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DataError(f"{what}: download_and_prepare failed ({type(e).__name__}: {_first_line(e)})") from e
    try:
        source = builder.as_data_source(split="train")
        keep = np.random.default_rng(0).permutation(len(source))[:sum(DSPRITES_SIZES)]
        items = source.__getitems__(sorted(int(i) for i in keep))
    except Exception as e:
        raise DataError(f"{what}: cannot read the prepared files in {data_dir} ({type(e).__name__}: "
                        f"{_first_line(e)})") from e
    from jaxvae.data.factors_toy import DSPRITES_FACTORS

    x = np.stack([np.asarray(ex["image"]) for ex in items])
    f = np.array([[ex[f"label_{n}"] for n in DSPRITES_FACTORS] for ex in items], np.float32)
    x = _to_unit(x, 1 if x.max() <= 1 else 255, what)
    cuts = np.cumsum(DSPRITES_SIZES)[:-1]
    return np.split(x, cuts), np.split(f, cuts), (64, 64, 1)


def _load_own(name, data_dir, manual_dir, download, valid_size):
    from jaxvae.data import builders

    builder = builders.prepare(name, data_dir, manual_dir=manual_dir, download=download)
    divisor = 1 if name == "binarized_mnist" else 255
    read = {s: _read_own_split(builder, s) for s in builder.info.splits}
    train, test = read["train"], read["test"]
    if "validation" in read:
        if valid_size is not None and valid_size != len(read["validation"][0]):
            raise DataError(f"{name} has a fixed validation split of {len(read['validation'][0])} examples; "
                            f"leave valid_size unset (got {valid_size})")
        valid = read["validation"]
    else:
        (xtr, xva), (ytr, yva) = _carve(*train, 10000 if valid_size is None else valid_size, name)
        train, valid = (xtr, ytr), (xva, yva)
    splits = [_to_unit(x, divisor, name) for x, _ in (train, valid, test)]
    return splits, [y for _, y in (train, valid, test)], builders.BUILDERS[name].IMAGE_SHAPE


def _read_own_split(builder, split: str):
    """Bulk-reads a split of a jaxvae builder: raw records parsed in one pass, original order restored."""
    from tensorflow_datasets.core.example_parser import tf_example_pb2

    try:
        source = builder.as_data_source(split=split).data_source
        raw = source.__getitems__(list(range(len(source))))
        images, index, labels = [], [], []
        for record in raw:
            f = tf_example_pb2.Example.FromString(record).features.feature
            images.append(f["image"].bytes_list.value[0])
            index.append(f["index"].int64_list.value[0])
            if "label" in f:
                labels.append(f["label"].int64_list.value[0])
        shape = builder.IMAGE_SHAPE
        x = np.frombuffer(b"".join(images), np.uint8).reshape(len(raw), *shape)
    except Exception as e:
        raise DataError(f"{builder.SOURCE}: the prepared files in {builder.data_dir} are unreadable "
                        f"({type(e).__name__}: {e}); delete that folder to rebuild them") from e
    order = np.argsort(np.asarray(index, np.int64), kind="stable")
    y = np.asarray(labels, np.int64)[order] if labels else None
    return x[order], y


def _read_split(builder, split: str, image_key: str, what: str):
    """Reads a whole split of any TFDS builder through TFDS's decoders; returns (images, labels or None)."""
    try:
        source = builder.as_data_source(split=split)
        items = source.__getitems__(range(len(source))) if len(source) else []
    except Exception as e:
        if _needs_tensorflow(e):
            raise DataError(f"{what}: reading split {split!r} needs TensorFlow, which is not installed") from e
        raise DataError(f"{what}: cannot read split {split!r} from {builder.data_dir} "
                        f"({type(e).__name__}: {e})") from e
    shape = builder.info.features[image_key].shape
    images = np.stack([np.asarray(ex[image_key]) for ex in items]) if items else np.zeros((0, *shape))
    labels = np.array([ex["label"] for ex in items], np.int64) if items and "label" in items[0] else None
    return images, labels


def _needs_tensorflow(e: BaseException | None) -> bool:
    while e is not None:
        if getattr(e, "name", None) == "tensorflow" or "No module named 'tensorflow'" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _image_like(feature) -> tuple[int, int, int] | None:
    """(H, W, C) if `feature` is a fixed-size image (Image, or a numeric 2-3-D/square 1-D Tensor)."""
    import tensorflow_datasets as tfds

    if not isinstance(feature, (tfds.features.Image, tfds.features.Tensor)):
        return None
    shape = tuple(feature.shape)
    if any(d is None or d < 0 for d in shape) or not shape:
        return None
    if isinstance(feature, tfds.features.Tensor):
        if type(feature) is not tfds.features.Tensor:
            return None  # ClassLabel, Scalar, ...
        if not (np.issubdtype(feature.np_dtype, np.number) or feature.np_dtype == np.bool_):
            return None
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (side, side, 1) if side > 1 and side * side == shape[0] else None
    if len(shape) == 2:
        return (*shape, 1)
    return shape if len(shape) == 3 else None


_TF_MSG = ("{what}: preparing this TFDS dataset needs TensorFlow, which is not installed (TFDS encodes "
           "tfds.features.Image with TensorFlow). Install tensorflow, prepare it elsewhere with "
           "file_format='array_record', or use a dataset with tfds.features.Tensor features.")


def _has_png_images(feature) -> bool:
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.Image):
        return True
    if isinstance(feature, tfds.features.FeaturesDict):
        return any(_has_png_images(f) for f in feature.values())
    return _has_png_images(feature.feature) if isinstance(feature, tfds.features.Sequence) else False


def _load_tfds(tname, data_dir, manual_dir, download, valid_size, image_key):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    what = f"tfds:{tname}"
    try:
        builder = tfds.builder(tname, data_dir=data_dir, file_format="array_record")
    except registered.DatasetNotFoundError as e:
        raise DataError(f"{what}: no such TFDS dataset ({_first_line(e)})") from e
    except Exception as e:
        if _needs_tensorflow(e):
            raise DataError(f"{what}: this TFDS builder needs TensorFlow, which is not installed") from e
        raise DataError(f"{what}: cannot create the TFDS builder ({type(e).__name__}: {_first_line(e)})") from e
    _check_image_feature(builder, image_key, what)
    if not builder.is_prepared():
        can_manual = manual_dir is not None and getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        if not download and not can_manual:
            raise DataError(f"{what} is not prepared in {data_dir} and download=False; "
                            "allow download or prepare it there first")
        if _has_png_images(builder.info.features) and importlib.util.find_spec("tensorflow") is None:
            raise DataError(_TF_MSG.format(what=what))
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        try:
            builder.download_and_prepare(download_config=config)
        except DataError:
            raise
        except Exception as e:
            if _needs_tensorflow(e):
                raise DataError(_TF_MSG.format(what=what)) from e
            raise DataError(f"{what}: download_and_prepare failed ({type(e).__name__}: {_first_line(e)})") from e
    shape = _image_like(builder.info.features[image_key])
    splits = dict(builder.info.splits)
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{what}: needs 'train' and 'test' splits; it has {sorted(splits)}")
    train = _read_split(builder, "train", image_key, what)
    test = _read_split(builder, "test", image_key, what)
    vname = next((s for s in _VALID_SPLITS if s in splits), None)
    if vname is not None:
        valid = _read_split(builder, vname, image_key, what)
        if valid_size is not None and valid_size != len(valid[0]):
            raise DataError(f"{what} has a fixed validation split of {len(valid[0])} examples; "
                            f"leave valid_size unset (got {valid_size})")
    else:
        size = min(10000, len(train[0]) // 10) if valid_size is None else valid_size
        (xtr, xva), (ytr, yva) = _carve(*train, size, what)
        train, valid = (xtr, ytr), (xva, yva)
    divisor = _divisor(train[0], builder.info.features[image_key], what)
    splits = [_to_unit(x, divisor, what) for x, _ in (train, valid, test)]
    return splits, [y for _, y in (train, valid, test)], shape


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _check_image_feature(builder, image_key, what):
    features = builder.info.features
    flat = dict(features.items()) if hasattr(features, "items") else {}
    images = [k for k, f in flat.items() if _image_like(f)]
    if image_key in flat and _image_like(flat[image_key]):
        return
    listing = ", ".join(f"{k}: {type(f).__name__}{getattr(f, 'shape', '')}" for k, f in flat.items())
    if not images:
        raise DataError(f"{what} has no image-like feature (features: {listing}); jaxvae needs fixed-size "
                        "images (tfds.features.Image or a numeric Tensor of shape (H, W[, C]))")
    raise DataError(f"{what}: feature {image_key!r} is not a fixed-size image (features: {listing}); "
                    f"pass image_key= one of {images}")


def _divisor(train: np.ndarray, feature, what: str) -> int:
    """What integer pixels are divided by: 255, or 1 for 0/1 integer Tensors (already binary)."""
    import tensorflow_datasets as tfds

    if not np.issubdtype(train.dtype, np.integer):
        return 1
    lo, hi = (train.min(), train.max()) if train.size else (0, 0)
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: integer pixels outside [0, 255] (range [{lo}, {hi}])")
    return 1 if type(feature) is tfds.features.Tensor and hi <= 1 else 255


def _to_unit(x: np.ndarray, divisor: int, what: str) -> np.ndarray:
    """Pixels -> float32 (N, D) in [0, 1]; DataError if they cannot be intensities."""
    x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    out = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer) and divisor != 1:
        out /= np.float32(divisor)
    if out.size and (out.min() < 0 or out.max() > 1):
        raise DataError(f"{what}: pixel values outside [0, 1] after scaling (range [{out.min()}, {out.max()}])")
    return out
