"""Tests for jaxvae.experiment.pictures: the tiling helper and the PNGs written by write_pictures."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from jaxvae.vae.model import VAE
from jaxvae.experiment.pictures import tile_images, write_pictures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _small(latent_dim, **kw):
    return VAE(x_dim=64, latent_dim=latent_dim, encoder_hidden=(16,), decoder_hidden=(16,), **kw)


@pytest.fixture(scope="module")
def small2():
    model = _small(2)
    return model, model.init(jax.random.key(0))


def _random_params(model, seed=0):
    """Parameters of ``model``'s structure filled from numpy (no eager flax init: fast)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))

    def fill(leaf):
        fan_in = leaf.shape[0] if len(leaf.shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(leaf.shape) > 1 else 0.1
        return jnp.asarray(rng.normal(size=leaf.shape) * scale, leaf.dtype)

    return jax.tree.map(fill, shapes)


def _linear(x_dim, latent_dim, seed=0, dec_kernel=None, dec_bias=None, likelihood="gaussian"):
    """A VAE without hidden layers, optionally with a given decoder."""
    model = VAE(x_dim=x_dim, latent_dim=latent_dim, encoder_hidden=(), decoder_hidden=(), likelihood=likelihood)
    params = _random_params(model, seed)
    if dec_kernel is not None or dec_bias is not None:
        out = dict(params["decoder"]["out"])
        if dec_kernel is not None:
            out["kernel"] = jnp.asarray(dec_kernel, jnp.float32)
        if dec_bias is not None:
            out["bias"] = jnp.asarray(dec_bias, jnp.float32)
        params = {**params, "decoder": {"out": out}}
    return model, params


def _data(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, dim)) < 0.3).astype(np.float32), rng.integers(0, 10, n)


def _read(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    img = mpimg.imread(path)
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[-1] in (3, 4)
    assert np.all(img >= 0.0) and np.all(img <= 1.0)
    return img


def _check_sizes(paths, max_side=1000, min_side=100):
    for p in paths:
        h, w = _read(p).shape[:2]
        assert min_side <= max(h, w) <= max_side, (p, h, w)
        assert min(h, w) >= 20, (p, h, w)
        assert os.path.getsize(p) < 600_000, p  # dpi ~100, small files


# ---------------------------------------------------------------------------------------------------
# tile_images
# ---------------------------------------------------------------------------------------------------
def test_tile_images_layout_exact():
    n, h, w = 5, 2, 3
    images = np.arange(1, n + 1, dtype=np.float32)[:, None, None, None] * np.ones((n, h, w, 1), np.float32)
    images[:, 0, 0, 0] += 0.5  # mark each tile's top-left corner
    grid = tile_images(images, ncols=2)
    assert grid.shape == (3 * h, 2 * w, 1)
    for i in range(n):
        r, c = divmod(i, 2)
        np.testing.assert_array_equal(grid[r * h:(r + 1) * h, c * w:(c + 1) * w], images[i])
    np.testing.assert_array_equal(grid[2 * h:, w:], 0.0)  # the unused last tile


def test_tile_images_padding_and_2d_input():
    images = np.stack([np.full((2, 2), v, np.float32) for v in (1.0, 2.0, 3.0)])  # (N, H, W)
    grid = tile_images(images, ncols=3, padding=1, pad_value=-1.0)
    assert grid.shape == (2, 3 * 2 + 2, 1)
    expected = np.array([[1, 1, -1, 2, 2, -1, 3, 3]] * 2, np.float32)[..., None]
    np.testing.assert_array_equal(grid, expected)

    rgb = np.random.default_rng(0).random((4, 3, 2, 3))
    grid = tile_images(rgb, ncols=1, padding=2, pad_value=0.5)
    assert grid.shape == (4 * 3 + 3 * 2, 2, 3)
    np.testing.assert_array_equal(grid[5:8], rgb[1])
    np.testing.assert_array_equal(grid[3:5], 0.5)
    # more columns than images: one row, the rest filled
    grid = tile_images(rgb[:2], ncols=4)
    assert grid.shape == (3, 8, 3)
    np.testing.assert_array_equal(grid[:, 4:], 0.0)


def test_tile_images_rejects_bad_input():
    with pytest.raises(ValueError):
        tile_images(np.zeros((0, 2, 2, 1)), 2)
    with pytest.raises(ValueError):
        tile_images(np.zeros((2, 2, 2, 1)), 0)
    with pytest.raises(ValueError):
        tile_images(np.zeros((4, 4)), 2)


# ---------------------------------------------------------------------------------------------------
# write_pictures
# ---------------------------------------------------------------------------------------------------
def test_latent2_writes_all_pictures(tmp_path, small2):
    model, params = small2
    x, labels = _data(5, 64)
    figs_before = plt.get_fignums()
    paths = write_pictures(model, params, str(tmp_path), jax.random.key(1), x_test=x, image_shape=(8, 8, 1),
                           labels=labels)
    assert [os.path.basename(p) for p in paths] == [
        "samples.png", "reconstructions.png", "traversals.png", "manifold.png", "latent_means.png"]
    assert all(os.path.dirname(p) == str(tmp_path) and os.path.isfile(p) for p in paths)
    _check_sizes(paths)
    assert plt.get_fignums() == figs_before  # no pyplot figures left open

    # with no labels the scatter is still drawn
    paths = write_pictures(model, params, str(tmp_path / "nolabels"), jax.random.key(1), x_test=x,
                           image_shape=(8, 8, 1))
    assert "latent_means.png" in [os.path.basename(p) for p in paths]


def test_latent5_no_2d_pictures_and_traversal_rows(tmp_path):
    model = _small(5, likelihood="gaussian")
    params = _random_params(model, 1)
    x, _ = _data(7, 64, seed=1)
    paths = write_pictures(model, params, str(tmp_path / "a"), jax.random.key(1), x_test=x,
                           image_shape=(8, 8, 1), traversal_dims=10)
    assert [os.path.basename(p) for p in paths] == ["samples.png", "reconstructions.png", "traversals.png"]
    _check_sizes(paths)
    h_all = _read(paths[2]).shape[0]  # 5 rows (all dims: traversal_dims > latent_dim)
    paths = write_pictures(model, params, str(tmp_path / "b"), jax.random.key(1), x_test=x,
                           image_shape=(8, 8, 1), traversal_dims=2)
    h_two = _read(paths[2]).shape[0]
    assert h_two < h_all


def test_mnist_size_model_is_fast(tmp_path):
    model = VAE(x_dim=784, latent_dim=2)
    params = _random_params(model, 2)
    x, labels = _data(1000, 784)
    x = (x * 255).astype(np.uint8).reshape(-1, 28, 28, 1)  # images, integer pixels
    paths = write_pictures(model, params, str(tmp_path / "first"), jax.random.key(2), x_test=x,
                           image_shape=(28, 28, 1), labels=labels)
    assert len(paths) == 5
    _check_sizes(paths)
    start = time.perf_counter()
    paths = write_pictures(model, params, str(tmp_path / "second"), jax.random.key(2), x_test=x,
                           image_shape=(28, 28, 1), labels=labels)
    assert time.perf_counter() - start < 5.0
    samples = _read(paths[0])
    assert samples.shape[0] > 400 and samples.shape[1] > 400  # 8x8 tiles of 28x28, at least 2x upscaled


def test_same_key_same_samples_different_key_different(tmp_path, small2):
    model, params = small2
    x, _ = _data(5, 64)

    def samples(key, sub):
        p = write_pictures(model, params, str(tmp_path / sub), key, x_test=x, image_shape=(8, 8, 1))[0]
        with open(p, "rb") as f:
            return f.read(), _read(p)

    b1, a1 = samples(jax.random.key(7), "k7a")
    b2, a2 = samples(jax.random.key(7), "k7b")
    b3, a3 = samples(jax.random.key(8), "k8")
    assert b1 == b2
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == a3.shape and not np.array_equal(a1, a3)
    assert b1 != b3


@pytest.mark.parametrize("image_shape", [(3, 3, 1), (3, 3, 3), (5, 7)])
def test_odd_shapes_and_colour(tmp_path, image_shape):
    x_dim = int(np.prod(image_shape))
    model, params = _linear(x_dim, 2)
    x, labels = _data(3, x_dim)
    paths = write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=image_shape,
                           labels=labels)
    assert len(paths) == 5
    _check_sizes(paths)


def _constant_decoder_model(value):
    """A Gaussian VAE whose decoder mean is ``value`` everywhere (possibly outside [0, 1])."""
    return _linear(64, 4, dec_kernel=np.zeros((4, 64)), dec_bias=np.full((64,), value))


@pytest.mark.parametrize("value, white", [(3.0, True), (-2.0, False)])
def test_means_outside_unit_interval_are_clipped(tmp_path, value, white):
    model, params = _constant_decoder_model(value)
    x, _ = _data(4, 64)
    path = write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=(8, 8, 1))[0]
    rgb = _read(path)[..., :3]
    target = 1.0 if white else 0.0
    frac = np.mean(np.all(rgb == target, axis=-1))
    # tiles cover most of samples.png; a clipped mean of 1 shows white, of 0 black (vmin=0, vmax=1)
    assert frac > 0.6, frac


def test_manifold_orientation(tmp_path):
    """z[0] grows to the right and z[1] upwards in manifold.png."""
    kernel = np.zeros((2, 64), np.float32)
    kernel[0] = 0.3  # brightness grows with z[0] only
    model, params = _linear(64, 2, dec_kernel=kernel, dec_bias=np.full((64,), 0.5))
    x, _ = _data(4, 64)
    paths = write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=(8, 8, 1))
    img = _read(paths[3])[..., 0]
    h, w = img.shape
    band = img[h // 3: 2 * h // 3]  # middle rows, clear of the title
    left, right = band[:, : w // 4].mean(), band[:, -w // 4:].mean()
    assert right > left + 0.3
    kernel = kernel[::-1].copy()  # now brightness grows with z[1] only: the top is brighter
    params["decoder"] = {"out": {"kernel": jnp.asarray(kernel), "bias": jnp.full((64,), 0.5)}}
    paths = write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=(8, 8, 1))
    img = _read(paths[3])[..., 0]
    top, bottom = img[h // 8: 3 * h // 8].mean(), img[5 * h // 8: 7 * h // 8].mean()
    assert top > bottom + 0.3


def test_no_test_examples_and_flow_model(tmp_path):
    model = _small(2, flow="planar", flow_length=3)
    params = _random_params(model, 3)
    paths = write_pictures(model, params, str(tmp_path / "empty"), jax.random.key(0),
                           x_test=np.zeros((0, 64), np.float32), image_shape=(8, 8, 1))
    assert [os.path.basename(p) for p in paths] == ["samples.png", "manifold.png"]
    x, labels = _data(1, 64)  # a single example: zero variance of the means must not break traversals
    paths = write_pictures(model, params, str(tmp_path / "one"), jax.random.key(0), x_test=x,
                           image_shape=(8, 8, 1), labels=labels)
    assert len(paths) == 5
    _check_sizes(paths)


def test_shape_mismatch_raises(tmp_path, small2):
    model, params = small2
    x, _ = _data(3, 64)
    with pytest.raises(ValueError):
        write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=(7, 7, 1))
    with pytest.raises(ValueError):
        write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x[:, :50], image_shape=(8, 8, 1))
    with pytest.raises(ValueError):
        write_pictures(model, params, str(tmp_path), jax.random.key(0), x_test=x, image_shape=(4, 4, 4))
