"""Batching: on-device shuffling and binarization (pure JAX, jit/scan friendly) and a host iterator."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["binarize_batch", "epoch_permutation", "epoch_batches", "eval_batches", "iterate_host_batches"]


def binarize_batch(key: jax.Array, x: jax.Array) -> jax.Array:
    """Dynamic binarization: x_bin ~ Bernoulli(x) elementwise, float32; same key -> same result."""
    x = jnp.asarray(x, jnp.float32)
    return jax.random.bernoulli(key, x).astype(jnp.float32)


def epoch_permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of range(n)."""
    return jax.random.permutation(key, n)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def epoch_batches(key: jax.Array, x: jax.Array, batch_size: int) -> jax.Array:
    """Shuffles x (N, ...) with `key`, drops the remainder, returns (N // batch_size, batch_size, ...)."""
    n = x.shape[0]
    m = n // batch_size
    if m == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} examples")
    idx = epoch_permutation(key, n)[: m * batch_size]
    return jnp.take(x, idx, axis=0).reshape(m, batch_size, *x.shape[1:])


def eval_batches(x: np.ndarray | jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Pads x (N, ...) to whole batches: (batches (M, B, ...), mask (M, B) bool, False on padding)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    n = x.shape[0]
    m = -(-n // batch_size)
    pad = m * batch_size - n
    xp = np if isinstance(x, np.ndarray) else jnp
    padded = xp.concatenate([x, xp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    mask = np.arange(m * batch_size) < n
    return (jnp.asarray(padded).reshape(m, batch_size, *x.shape[1:]),
            jnp.asarray(mask.reshape(m, batch_size)))


def iterate_host_batches(x: np.ndarray, batch_size: int, *, seed: int, epoch: int,
                         drop_remainder: bool = True) -> Iterator[np.ndarray]:
    """Yields shuffled numpy batches of x; the order is a deterministic function of (seed, epoch)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    n = len(x)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        yield x[perm[i:i + batch_size]]
