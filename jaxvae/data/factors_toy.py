"""``factors_toy``: small generated images with three known, independent factors of variation.

The write-up's 3x3 example speculates that a VAE "might find that one dimension controls the overall
brightness of the image and the other the contrast between the centre and the edges". This data set makes
that checkable: every 8x8 image is a deterministic function of three independently drawn factors, plus
stated noise, and the factors ship as labels.

    brightness  b ~ U[0.35, 0.65]          the image's mean pixel value (before noise and clipping)
    contrast    c ~ U[-0.2, 0.2]           centre-block mean minus edge-ring mean (before noise)
    orientation o ~ U{0, 1, 2, 3}          a 2-pixel-wide bar through the centre: horizontal, vertical,
                                           diagonal, anti-diagonal

    x = clip(b * 1 + c * P + BAR_AMPLITUDE * B_o + eps, 0, 1),   eps ~ N(0, NOISE_STD^2 I)

``P`` is +3/4 on the central 4x4 block and -1/4 on the 48 edge pixels (zero mean, centre minus edge
= 1). ``B_o`` is the indicator of bar ``o`` with its projection on span{1, P} removed, so the bar changes
neither the mean nor the centre-edge difference: each factor moves its own image statistic, and
brightness and contrast are exactly the mean and the centre-minus-edge difference of the noiseless image.
The noiseless means stay inside [0.05, 0.95] (``noiseless_images``; a test checks), so clipping only
touches the noise, at 3+ standard deviations. Splits: 4000 train, 500 validation, 1000 test, drawn with
fixed seeds (``SPLIT_SEEDS``), no download.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FACTOR_NAMES", "IMAGE_SIDE", "SPLIT_SIZES", "SPLIT_SEEDS", "NOISE_STD", "sample_factors",
           "noiseless_images", "render", "make_split", "load_factors_toy", "patterns"]

FACTOR_NAMES = ("brightness", "contrast", "orientation")
IMAGE_SIDE = 8
BRIGHTNESS_RANGE = (0.35, 0.65)
CONTRAST_RANGE = (-0.2, 0.2)
NUM_ORIENTATIONS = 4
BAR_AMPLITUDE = 0.1
NOISE_STD = 0.02
SPLIT_SIZES = (4000, 500, 1000)  # train, validation, test
SPLIT_SEEDS = (100, 101, 102)
#: The factors of dSprites (``data.name = "dsprites"``, jaxvae.data.loader), for comparison with real data.
DSPRITES_FACTORS = ("shape", "scale", "orientation", "x_position", "y_position")


def patterns() -> tuple[np.ndarray, np.ndarray]:
    """(P, B): the centre-minus-edge pattern P, shape (64,), and the 4 orthogonalised bars B, (4, 64)."""
    s = IMAGE_SIDE
    i, j = np.mgrid[0:s, 0:s]
    centre = (i >= 2) & (i < 6) & (j >= 2) & (j < 6)
    p = np.where(centre, 0.75, -0.25).reshape(-1)  # 16 * 0.75 - 48 * 0.25 = 0
    bars = np.stack([
        (i == 3) | (i == 4),  # horizontal, 2 pixels wide
        (j == 3) | (j == 4),  # vertical
        np.abs(i - j) <= 1,  # diagonal, 3 pixels wide (about 2 across the diagonal direction)
        np.abs(i + j - (s - 1)) <= 1,  # anti-diagonal
    ]).reshape(NUM_ORIENTATIONS, -1).astype(np.float64)
    basis = np.stack([np.ones(s * s), p])  # span{1, P}; its rows are orthogonal
    coef = bars @ basis.T / np.sum(basis**2, axis=1)
    return p, bars - coef @ basis


def sample_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) independent factors: brightness, contrast (uniform), orientation (uniform on {0..3}, as float)."""
    b = rng.uniform(*BRIGHTNESS_RANGE, size=n)
    c = rng.uniform(*CONTRAST_RANGE, size=n)
    o = rng.integers(0, NUM_ORIENTATIONS, size=n).astype(np.float64)
    return np.stack([b, c, o], axis=1)


def noiseless_images(factors: np.ndarray) -> np.ndarray:
    """(n, 64) float64 means b * 1 + c * P + BAR_AMPLITUDE * B_o (no noise, no clipping)."""
    p, bars = patterns()
    f = np.asarray(factors, np.float64)
    return f[:, :1] + f[:, 1:2] * p[None] + BAR_AMPLITUDE * bars[f[:, 2].astype(int)]


def render(factors: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(n, 64) float32 images clip(noiseless_images(factors) + noise, 0, 1); ``noise`` is (n, 64)."""
    return np.clip(noiseless_images(factors) + noise, 0.0, 1.0).astype(np.float32)


def make_split(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 64) float32, factors (n, 3) float32) from one generator seeded with ``seed``: the factors
    are drawn first, then the noise eps ~ N(0, NOISE_STD^2) pixel-wise."""
    rng = np.random.default_rng(seed)
    factors = sample_factors(rng, n)
    noise = NOISE_STD * rng.standard_normal((n, IMAGE_SIDE * IMAGE_SIDE))
    return render(factors, noise), factors.astype(np.float32)


def load_factors_toy() -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int, int]]:
    """([train, valid, test] images, [train, valid, test] factors, (8, 8, 1))."""
    splits = [make_split(seed, n) for seed, n in zip(SPLIT_SEEDS, SPLIT_SIZES)]
    return [x for x, _ in splits], [f for _, f in splits], (IMAGE_SIDE, IMAGE_SIDE, 1)


def manifold_residual(images: np.ndarray) -> np.ndarray:
    """(n,) mean squared pixel distance from each image to the nearest noiseless ``factors_toy`` image:

        min_{b in B_RANGE, c in C_RANGE, o} ||x - (b 1 + c P + BAR_AMPLITUDE B_o)||^2 / 64.

    1, P and every B_o are orthogonal, so the objective separates: b and c are the clipped projections
    (mean(x) and <x, P> / |P|^2) and o the bar closest to what remains. A sample-quality score for decoded
    prior samples: a data image scores about NOISE_STD^2 (the noise), a blurred mixture of bars more.
    """
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    p, bars = patterns()
    b = np.clip(x.mean(1), *BRIGHTNESS_RANGE)
    c = np.clip(x @ p / (p @ p), *CONTRAST_RANGE)
    rest = x - b[:, None] - c[:, None] * p[None]
    dist = np.stack([np.mean((rest - BAR_AMPLITUDE * bars[o]) ** 2, axis=1) for o in range(len(bars))], 1)
    return dist.min(1)
