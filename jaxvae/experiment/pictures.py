"""PNG pictures of a trained VAE: prior samples, reconstructions, latent traversals, 2-D manifold/latents.

Everything is computed with numpy/JAX from an explicit key (no global RNG); all decoding for one call of
``write_pictures`` happens in a single jitted batch. Figures are drawn with the Agg canvas on
``matplotlib.figure.Figure`` objects that pyplot never sees, so nothing is displayed and nothing leaks.
"""

from __future__ import annotations

import functools
import math
import os
from statistics import NormalDist
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxvae.vae import flows

__all__ = ["tile_images", "write_pictures"]

DPI = 100
SAMPLE_GRID = 8  # samples.png is SAMPLE_GRID x SAMPLE_GRID prior samples
RECON_PER_ROW = 8  # examples per input/reconstruction row pair
RECON_MAX = 32  # examples shown in reconstructions.png
TRAVERSAL_STEPS = 11  # values of the traversed coordinate, evenly spaced over [-3, 3]
TRAVERSAL_RANGE = 3.0
MANIFOLD_GRID = 15  # manifold.png is MANIFOLD_GRID x MANIFOLD_GRID decoded images
SCATTER_MAX = 10000  # test points drawn in latent_means.png
TARGET_PX = 800  # a grid is upscaled by an integer factor up to about this many pixels on its long side
SEPARATOR = 0.5  # grey lines between tiles


# ---------------------------------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------------------------------
def tile_images(images: np.ndarray, ncols: int, *, padding: int = 0, pad_value: float = 0.0) -> np.ndarray:
    """Lays N images (N, H, W, C) (or (N, H, W)) out row-major on a grid with ``ncols`` columns.

    Returns an array of shape (R*H + (R-1)*padding, ncols*W + (ncols-1)*padding, C), R = ceil(N / ncols):
    image i sits at tile (i // ncols, i % ncols); the ``padding``-pixel gaps between tiles and the unused
    tiles of the last row hold ``pad_value``.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C) or (N, H, W), got {images.shape}")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("tile_images needs at least one image")
    ncols = int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    padding = int(padding)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    nrows = -(-n // ncols)
    dtype = np.result_type(images.dtype, np.asarray(pad_value).dtype)
    out = np.full((nrows * h + (nrows - 1) * padding, ncols * w + (ncols - 1) * padding, c), pad_value,
                  dtype=dtype)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = r * (h + padding), col * (w + padding)
        out[y:y + h, x:x + w] = images[i]
    return out


# ---------------------------------------------------------------------------------------------------
# Jitted model calls (one compiled function per hashable model, a fresh one otherwise)
# ---------------------------------------------------------------------------------------------------
def _locate(model, params, x):
    """A point summary of q(z|x) per example: the base mean mu, pushed through the flow if there is one."""
    post = model.encode(params, x)
    loc = post.mu
    if model.has_flow:
        loc, _ = flows.apply(model.flow_part, post.flow_params, post.mu)
    return loc


def _decode(model, params, z):
    return model.mean_image(params, z)


@functools.lru_cache(maxsize=16)
def _cached_jit(fn: Callable, model) -> Callable:
    return jax.jit(functools.partial(fn, model))


def _jitted(fn: Callable, model) -> Callable:
    try:
        return _cached_jit(fn, model)
    except TypeError:  # an unhashable model (e.g. list-valued hidden sizes): compile for this call only
        return jax.jit(functools.partial(fn, model))


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------
def _to_display(images: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """(N, D) means -> (N, H, W, C) float images clipped to [0, 1] (a Gaussian mean may leave it)."""
    images = np.asarray(images, dtype=np.float32).reshape((-1, *image_shape))
    return np.clip(np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _new_figure(width_px: float, height_px: float) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_grid(path: str, images: np.ndarray, ncols: int, title: str, *,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> str:
    """Tiles (N, H, W, C) images in [0, 1] and saves them as one grey-scale (or RGB) picture."""
    h, w = images.shape[1:3]
    pad = 1 if min(h, w) > 1 else 0
    grid = tile_images(images, ncols, padding=pad, pad_value=SEPARATOR)
    gh, gw = grid.shape[:2]
    long_side = max(gh, gw)
    scale = max(1, TARGET_PX // long_side) if long_side <= TARGET_PX else TARGET_PX / long_side
    img_w, img_h = gw * scale, gh * scale
    left = 90 if row_labels else 6
    bottom = 22 if col_labels else 6
    top, right = 26, 6
    fig_w, fig_h = left + img_w + right, bottom + img_h + top
    fig = _new_figure(fig_w, fig_h)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, img_w / fig_w, img_h / fig_h))
    shown = grid[..., 0] if grid.shape[-1] == 1 else grid
    ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if row_labels:
        ax.set_yticks([r * (h + pad) + (h - 1) / 2 for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=8)
        ax.tick_params(axis="y", length=0)
    if col_labels:
        ax.set_xticks([c * (w + pad) + (w - 1) / 2 for c in range(len(col_labels))])
        ax.set_xticklabels(col_labels, fontsize=7)
        ax.tick_params(axis="x", length=0)
    fig.suptitle(title, fontsize=9, y=1.0 - 4 / fig_h, va="top")
    fig.savefig(path, dpi=DPI)
    return path


def _save_scatter(path: str, means: np.ndarray, labels: np.ndarray | None) -> str:
    fig = _new_figure(520, 480)
    ax = fig.add_axes((0.12, 0.1, 0.7 if labels is not None else 0.84, 0.82))
    size = float(np.clip(3000.0 / max(len(means), 1), 3.0, 30.0))  # visible markers for few points
    kw: dict[str, Any] = dict(s=size, alpha=0.7, linewidths=0, rasterized=True)
    if labels is None:
        ax.scatter(means[:, 0], means[:, 1], color="tab:blue", **kw)
    else:
        classes = np.unique(labels)
        discrete = np.issubdtype(labels.dtype, np.integer) and len(classes) <= 10 and classes.min() >= 0 \
            and classes.max() <= 9
        if discrete:
            sc = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, **kw)
            cbar = fig.colorbar(sc, cax=fig.add_axes((0.86, 0.1, 0.03, 0.82)), ticks=range(10))
        else:
            sc = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="viridis", **kw)
            cbar = fig.colorbar(sc, cax=fig.add_axes((0.86, 0.1, 0.03, 0.82)))
        cbar.set_label("label", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    ax.set_xlabel("z[0]", fontsize=9)
    ax.set_ylabel("z[1]", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_title(f"posterior means of {len(means)} test examples", fontsize=9)
    fig.savefig(path, dpi=DPI)
    return path


def _prepare_labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        labels = np.argmax(labels, axis=-1)
    labels = labels.reshape(-1)[:n]
    if len(labels) < n:
        return None
    if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    return labels


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def write_pictures(model, params, workdir, key, *, x_test: np.ndarray, image_shape: tuple[int, int, int],
                   labels: np.ndarray | None = None, traversal_dims: int = 10) -> list[str]:
    """Writes PNGs into ``workdir`` and returns their paths.

    samples.png: 8x8 grid of mean images E[x|z] decoded from z ~ N(0, I) drawn with ``key``;
    reconstructions.png: rows of up to 8 test inputs, each followed by a row of their reconstructions
        (E[x|z] at the posterior location: the base mean mu, pushed through the flow if the model has one);
    traversals.png: one row per latent dim among the ``traversal_dims`` most active ones (largest variance
        of the posterior location over ``x_test``): that coordinate set to 11 values in [-3, 3], the others
        held at the posterior location of the first test example;
    for latent_dim == 2 also manifold.png (E[x|z] on a 15x15 grid of N(0, 1) quantiles; z[0] increases to
        the right, z[1] upwards) and latent_means.png (scatter of test posterior locations, coloured by label).

    ``x_test``: (N, x_dim) or (N, *image_shape) test data (integers are read as 0..255 pixels); N may be
    small or zero (then only the pictures that need no test data are written). ``image_shape``: (H, W, C)
    with H*W*C == model.x_dim and C in {1, 3} (or (H, W) for grey-scale).
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) == 2:
        image_shape = (*image_shape, 1)
    if len(image_shape) != 3 or image_shape[-1] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W, C) with C in {{1, 3}}, got {image_shape}")
    if math.prod(image_shape) != model.x_dim:
        raise ValueError(f"image_shape {image_shape} has {math.prod(image_shape)} pixels, model.x_dim is "
                         f"{model.x_dim}")
    x = np.asarray(x_test)
    x = x.reshape((x.shape[0], -1)) if x.ndim >= 1 and x.shape[0] > 0 else np.zeros((0, model.x_dim), x.dtype)
    if x.shape[1] != model.x_dim:
        raise ValueError(f"x_test has {x.shape[1]} features per example, model.x_dim is {model.x_dim}")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        x = x.astype(np.float32) / (255.0 if x.size and x.max() > 1 else 1.0)
    x = x.astype(np.float32)
    os.makedirs(workdir, exist_ok=True)
    d, n = model.latent_dim, x.shape[0]

    # -- latent points to decode, all in one batch ---------------------------------------------------
    blocks: dict[str, np.ndarray] = {}
    prior_z = model.sample_prior(params, key, SAMPLE_GRID * SAMPLE_GRID)
    if isinstance(prior_z, tuple):  # a hierarchical model's (z_1, ..., z_L): pictures decode z_1
        prior_z = prior_z[0]
    blocks["samples"] = np.asarray(prior_z, dtype=np.float32)

    loc = None
    if n > 0:
        loc = np.asarray(_jitted(_locate, model)(params, jnp.asarray(x)), dtype=np.float32)
        n_rec = min(n, RECON_MAX)
        blocks["recon"] = loc[:n_rec]
        k_trav = max(0, min(int(traversal_dims), d))
        if k_trav > 0:
            var = loc.var(axis=0)
            dims = np.argsort(-var, kind="stable")[:k_trav]
            values = np.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, TRAVERSAL_STEPS, dtype=np.float32)
            trav = np.repeat(loc[:1], k_trav * TRAVERSAL_STEPS, axis=0).reshape(k_trav, TRAVERSAL_STEPS, d)
            trav[np.arange(k_trav), :, dims] = values
            blocks["traversal"] = trav.reshape(-1, d)

    if d == 2:
        q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, MANIFOLD_GRID)], np.float32)
        z1, z2 = np.meshgrid(q, q[::-1])  # rows: z[1] from high (top) to low; columns: z[0] low to high
        blocks["manifold"] = np.stack([z1.ravel(), z2.ravel()], axis=-1)

    names = list(blocks)
    z_all = np.concatenate([blocks[k] for k in names], axis=0)
    decoded = _to_display(np.asarray(_jitted(_decode, model)(params, jnp.asarray(z_all))),
                          image_shape)
    splits = np.cumsum([len(blocks[k]) for k in names])[:-1]
    images = dict(zip(names, np.split(decoded, splits)))

    # -- pictures -------------------------------------------------------------------------------------
    paths = [_save_grid(os.path.join(workdir, "samples.png"), images["samples"], SAMPLE_GRID,
                        f"samples: E[x|z], z ~ p(z) ({model.likelihood_name})")]

    if n > 0:
        n_rec = len(images["recon"])
        per_row = min(RECON_PER_ROW, n_rec)
        inputs = _to_display(x[:n_rec], image_shape)
        rows, row_labels = [], []
        for start in range(0, n_rec, per_row):
            for part, label in ((inputs, "input"), (images["recon"], "recon")):
                chunk = part[start:start + per_row]
                blank = np.full((per_row - len(chunk), *image_shape), SEPARATOR, np.float32)
                rows.append(np.concatenate([chunk, blank], axis=0))
                row_labels.append(label)
        paths.append(_save_grid(os.path.join(workdir, "reconstructions.png"), np.concatenate(rows), per_row,
                                "test inputs and reconstructions E[x|z = posterior mean]",
                                row_labels=row_labels))

    if "traversal" in images:
        labels_t = [f"z[{int(i)}] var {v:.2g}" for i, v in zip(dims, var[dims])]
        cols = [f"{v:g}" for v in values]
        paths.append(_save_grid(os.path.join(workdir, "traversals.png"), images["traversal"], TRAVERSAL_STEPS,
                                "latent traversals from the posterior mean of test example 0",
                                row_labels=labels_t, col_labels=cols))

    if d == 2:
        paths.append(_save_grid(os.path.join(workdir, "manifold.png"), images["manifold"], MANIFOLD_GRID,
                                "E[x|z] on N(0,1) quantiles; z[0] \u2192, z[1] \u2191"))
        if n > 0:
            m = min(n, SCATTER_MAX)
            paths.append(_save_scatter(os.path.join(workdir, "latent_means.png"), loc[:m],
                                       _prepare_labels(labels, m)))
    return paths
