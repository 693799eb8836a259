"""Data layer: datasets as float32 arrays in [0, 1] (TFDS array_record builders, no TensorFlow) and batching."""

from jaxvae.data.batching import (binarize_batch, epoch_batches, epoch_permutation, eval_batches,
                                  iterate_host_batches)
from jaxvae.data.formats import DataError
from jaxvae.data.loader import DATASET_NAMES, Dataset, default_data_dir, load_dataset, pixel_logits, pixel_mean

__all__ = [
    "DATASET_NAMES", "DataError", "Dataset", "binarize_batch", "default_data_dir", "epoch_batches",
    "epoch_permutation", "eval_batches", "iterate_host_batches", "load_dataset", "pixel_logits", "pixel_mean",
]
