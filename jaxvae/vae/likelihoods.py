"""Observation models p(x|z): which heads the decoder outputs, and the density of x given them.

Each likelihood is a small frozen object registered by name (``model.likelihood``):
``heads(x_dim)`` lists the decoder's output layers as (name, width, zero_init), ``log_prob(x, out)``
sums over pixels, ``mean(out)`` is E[x|z] (pictures), ``sample(key, out)`` draws x ~ p(x|z).
``out`` is the decoder's output: one array for a single head, else a tuple in the heads' order.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae.registry import register_likelihood


@register_likelihood("bernoulli")
@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """p(x|z) = prod_i Bern(x_i; sigmoid(l_i)), l the decoder's logits: log p = sum_i x_i l_i - log(1 + e^{l_i})."""

    data_range = (0.0, 1.0)
    bias_from_data = "logits"  # decoder output bias initialised to the pixel log-odds

    def heads(self, x_dim: int):
        return (("out", x_dim, False),)

    def log_prob(self, x, out):
        return D.bernoulli_log_prob(x, out)

    def mean(self, out):
        return jax.nn.sigmoid(out)

    def sample(self, key, out):
        return jax.random.bernoulli(key, jax.nn.sigmoid(out)).astype(out.dtype)


@register_likelihood("gaussian")
@dataclasses.dataclass(frozen=True)
class GaussianFixed:
    """p(x|z) = N(x; m(z), sigma^2 I) with a fixed sigma^2 (``model.obs_variance``)."""

    variance: float = 1.0
    data_range = None
    bias_from_data = "mean"

    @classmethod
    def from_model(cls, model):
        return cls(float(model.obs_variance))

    def heads(self, x_dim: int):
        return (("out", x_dim, False),)

    def log_prob(self, x, out):
        return D.gaussian_fixed_log_prob(x, out, self.variance)

    def mean(self, out):
        return out

    def sample(self, key, out):
        return out + jnp.sqrt(self.variance) * jax.random.normal(key, out.shape, out.dtype)


@register_likelihood("gaussian_learned")
@dataclasses.dataclass(frozen=True)
class GaussianLearned:
    """p(x|z) = N(x; m(z), diag exp(v(z))): the decoder also outputs a per-pixel log-variance
    (its layer starts at zero weights, i.e. unit variance)."""

    data_range = None
    bias_from_data = "mean"

    def heads(self, x_dim: int):
        return (("out", x_dim, False), ("out_logvar", x_dim, True))

    def log_prob(self, x, out):
        mean, logvar = out
        return D.gaussian_learned_log_prob(x, mean, logvar)

    def mean(self, out):
        return out[0]

    def sample(self, key, out):
        mean, logvar = out
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


# -- 8-bit images: discretized likelihoods ---------------------------------------------------------------
# Convention (PixelCNN++, Salimans et al. 2017): the loader's pixels x = k/255, k in {0..255}, are mapped to
# y = 2x - 1 in [-1, 1]; bin k covers [y - 1/255, y + 1/255], the end bins extend to -inf and +inf, so the
# 256 probabilities of a subpixel sum to exactly 1 and log p(x|z) is a log-probability (nats), not a density:
# bits/dim = -log p(x) / (D ln 2) with no further correction (``bits_per_dim``).
NUM_BINS = 256
_HALF_BIN = 1.0 / (NUM_BINS - 1)  # half a bin width on the [-1, 1] scale
_EDGE = 1.0 - _HALF_BIN  # y below -_EDGE is the bottom bin, above +_EDGE the top bin


def to_pm1(x):
    """Pixels k/255 in [0, 1] -> 2x - 1 in [-1, 1] (bin centres of the discretized likelihoods)."""
    return 2.0 * x - 1.0


def _log_diff_sigmoid(a, b):
    """log(sigmoid(a) - sigmoid(b)) for a > b, without cancellation:
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^{b - a})."""
    return jax.nn.log_sigmoid(a) + jax.nn.log_sigmoid(-b) + jnp.log(-jnp.expm1(b - a))


def discretized_logistic_log_prob(y, mean, log_scale):
    """log P(y) of one subpixel, elementwise (no sum): the logistic(mean, e^log_scale) mass of y's bin
    (Kingma et al. 2016, IAF; Salimans et al. 2017, PixelCNN++), y in [-1, 1] on the 256-value grid:

        P(y) = sigma((y + 1/255 - mean) / s) - sigma((y - 1/255 - mean) / s), end bins open to +-inf.

    Finite for every scale and every pixel (the difference is formed in log space, see _log_diff_sigmoid).
    """
    inv_s = jnp.exp(-log_scale)
    a = (y + _HALF_BIN - mean) * inv_s  # upper edge
    b = (y - _HALF_BIN - mean) * inv_s  # lower edge
    bottom, top = y < -_EDGE, y > _EDGE
    # double-where: the unused branch gets harmless inputs, so no NaN leaks into gradients
    mid = _log_diff_sigmoid(jnp.where(bottom | top, 1.0, a), jnp.where(bottom | top, 0.0, b))
    return jnp.where(bottom, jax.nn.log_sigmoid(a), jnp.where(top, jax.nn.log_sigmoid(-b), mid))


def discretized_gaussian_log_prob(y, mean, log_scale):
    """log P(y) of one subpixel, elementwise: the N(mean, e^{2 log_scale}) mass of y's bin (same bins as
    ``discretized_logistic_log_prob``): P(y) = Phi((y + 1/255 - mean)/s) - Phi((y - 1/255 - mean)/s).

    In the lower tail log(Phi(a) - Phi(b)) = log Phi(a) + log(1 - e^{log Phi(b) - log Phi(a)}) is
    accurate; the upper tail uses Phi(a) - Phi(b) = Phi(-b) - Phi(-a). A bin much narrower than the scale
    ((a - b) < 1e-3) uses the midpoint rule, whose relative error (a - b)^2 |t^2 - 1| / 24 is below
    float32 precision there.
    """
    from jax.scipy.special import log_ndtr

    inv_s = jnp.exp(-log_scale)
    a = (y + _HALF_BIN - mean) * inv_s
    b = (y - _HALF_BIN - mean) * inv_s
    bottom, top = y < -_EDGE, y > _EDGE
    edge = bottom | top
    flip = (a + b) > 0
    hi = jnp.where(edge, 1.0, jnp.where(flip, -b, a))
    lo = jnp.where(edge, 0.0, jnp.where(flip, -a, b))
    exact = log_ndtr(hi) + jnp.log(-jnp.expm1(jnp.minimum(log_ndtr(lo) - log_ndtr(hi), -1e-30)))
    width = jnp.where(edge, 1.0, a - b)
    t = jnp.where(edge, 0.0, 0.5 * (a + b))
    midpoint = -0.5 * jnp.square(t) - 0.5 * jnp.log(2 * jnp.pi) + jnp.log(width)
    mid = jnp.where(width < 1e-3, midpoint, exact)
    return jnp.where(bottom, log_ndtr(a), jnp.where(top, log_ndtr(-b), mid))


def bits_per_dim(nll_nats, num_dims: int):
    """bits/dim = -log p(x) / (D ln 2) for a discrete model of D subpixels (a uniform model of 8-bit
    pixels gives exactly 8)."""
    return nll_nats / (num_dims * math.log(2.0))


def _sum_event(v, event_ndim: int):
    return jnp.sum(v, axis=tuple(range(-event_ndim, 0)))


def _channels(model) -> int:
    shape = getattr(model, "x_shape", None)
    return int(shape[-1]) if shape else 1


@register_likelihood("discretized_logistic")
@dataclasses.dataclass(frozen=True)
class DiscretizedLogistic:
    """p(x|z) = prod_i DiscLogistic(y_i; m_i(z), s_i(z)), y = 2x - 1 (Kingma et al. 2016): heads
    "out" (the mean on the [-1, 1] scale) and "out_log_scale" (zero-initialised: scale 1). log p sums over
    the last ``event_ndim`` axes: 1 for flat x (..., D), 3 for images (..., H, W, C)."""

    event_ndim: int = 1
    min_log_scale: float = -7.0  # PixelCNN++'s floor: bins are 2/255 wide, so finer scales only overfit
    discrete = True
    data_range = (0.0, 1.0)
    bias_from_data = None

    @classmethod
    def from_model(cls, model):
        return cls(event_ndim=3 if getattr(model, "x_shape", None) else 1)

    def heads(self, x_dim: int):
        return (("out", x_dim, False), ("out_log_scale", x_dim, True))

    def _log_scale(self, out):
        return jnp.maximum(out[1], self.min_log_scale)

    def log_prob(self, x, out):
        return _sum_event(discretized_logistic_log_prob(to_pm1(x), out[0], self._log_scale(out)),
                          self.event_ndim)

    def mean(self, out):
        return jnp.clip((out[0] + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, key, out):
        u = jax.random.uniform(key, out[0].shape, out[0].dtype, 1e-5, 1.0 - 1e-5)
        y = out[0] + jnp.exp(self._log_scale(out)) * (jnp.log(u) - jnp.log1p(-u))
        return jnp.round(jnp.clip((y + 1.0) / 2.0, 0.0, 1.0) * 255.0) / 255.0


@register_likelihood("discretized_gaussian")
@dataclasses.dataclass(frozen=True)
class DiscretizedGaussian(DiscretizedLogistic):
    """p(x|z) = prod_i DiscNormal(y_i; m_i(z), s_i(z)), y = 2x - 1: the Gaussian mass of each 8-bit bin
    (same heads, bins and ``event_ndim`` as discretized_logistic)."""

    def log_prob(self, x, out):
        return _sum_event(discretized_gaussian_log_prob(to_pm1(x), out[0], self._log_scale(out)),
                          self.event_ndim)

    def sample(self, key, out):
        y = out[0] + jnp.exp(self._log_scale(out)) * jax.random.normal(key, out[0].shape, out[0].dtype)
        return jnp.round(jnp.clip((y + 1.0) / 2.0, 0.0, 1.0) * 255.0) / 255.0


def mixture_logistic_log_prob(y, logits, means, log_scales, coeffs):
    """log p of whole pixels under a mixture of discretized logistics (Salimans et al. 2017, PixelCNN++,
    per pixel, no autoregression across pixels):

        p(y) = sum_k pi_k prod_c DiscLogistic(y_c; mu_kc + sum_{j<c} tanh(a_kcj) y_j, s_kc)

    y (..., C) one pixel's channels on [-1, 1]; logits (..., K); means, log_scales (..., K, C); coeffs
    (..., K, C(C-1)/2) in the order (1,0), (2,0), (2,1), ... (PixelCNN++'s c0, c1, c2 for RGB).
    Returns (...,): the log-probability of each pixel.
    """
    num_c = y.shape[-1]
    coef = jnp.tanh(coeffs)
    yk = y[..., None, :]  # (..., 1, C): broadcast over components
    shifted, i = [], 0
    for c in range(num_c):
        m = means[..., c]
        for j in range(c):
            m = m + coef[..., i] * yk[..., j]
            i += 1
        shifted.append(m)
    mu = jnp.stack(jnp.broadcast_arrays(*shifted), axis=-1)
    per_channel = discretized_logistic_log_prob(yk, mu, log_scales)  # (..., K, C)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + jnp.sum(per_channel, -1), axis=-1)


@register_likelihood("discretized_logistic_mixture")
@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticMixture:
    """p(x|z) = prod_pixels sum_k pi_k(z) prod_c DiscLogistic(...) (Salimans et al. 2017; see
    ``mixture_logistic_log_prob``): K = ``model.num_mixtures`` components per pixel whose channels are
    coupled linearly (RGB). Heads, per pixel: "out" means (K C), "out_logits" (K), "out_log_scale" (K C,
    zero-initialised), "out_coeffs" (K C(C-1)/2, only for C > 1). For flat x every dimension is a
    one-channel pixel. Pixels are the last ``event_ndim`` - 1 axes before the channel axis (3: H, W, C)."""

    num_mixtures: int = 5
    channels: int = 1
    event_ndim: int = 1
    min_log_scale: float = -7.0
    discrete = True
    data_range = (0.0, 1.0)
    bias_from_data = None

    @classmethod
    def from_model(cls, model):
        return cls(int(getattr(model, "num_mixtures", 5)), _channels(model),
                   3 if getattr(model, "x_shape", None) else 1)

    @property
    def _num_coeffs(self):
        return self.channels * (self.channels - 1) // 2

    def heads(self, x_dim: int):
        k, c = self.num_mixtures, self.channels
        pixels = x_dim // c
        heads = [("out", pixels * k * c, False), ("out_logits", pixels * k, True),
                 ("out_log_scale", pixels * k * c, True)]
        if self._num_coeffs:
            heads.append(("out_coeffs", pixels * k * self._num_coeffs, True))
        return tuple(heads)

    def _split(self, x, out):
        """x -> pixels (..., P, C); heads -> (..., P, K[, C]) whatever their layout (flat or (H, W, .))."""
        k, c = self.num_mixtures, self.channels
        batch = x.shape[: x.ndim - self.event_ndim]
        pixels = x.reshape(*batch, -1, c)
        outs = out if isinstance(out, tuple) else (out,)
        lead = outs[0].shape[: outs[0].ndim - self.event_ndim]
        p = pixels.shape[-2]
        means = outs[0].reshape(*lead, p, k, c)
        logits = outs[1].reshape(*lead, p, k)
        log_scales = jnp.maximum(outs[2].reshape(*lead, p, k, c), self.min_log_scale)
        coeffs = (outs[3].reshape(*lead, p, k, self._num_coeffs) if self._num_coeffs
                  else jnp.zeros((*lead, p, k, 0), means.dtype))
        return pixels, logits, means, log_scales, coeffs

    def _x_like(self, out):
        """Zeros shaped like x for the decoder output ``out`` (x's last axis is K times narrower)."""
        return jnp.zeros(out[0].shape[:-1] + (out[0].shape[-1] // self.num_mixtures,), out[0].dtype)

    def log_prob(self, x, out):
        pixels, logits, means, log_scales, coeffs = self._split(x, out)
        return jnp.sum(mixture_logistic_log_prob(to_pm1(pixels), logits, means, log_scales, coeffs), -1)

    def mean(self, out):
        """E[x|z] channel by channel with the coupling applied at the component means (for pictures)."""
        x_like = self._x_like(out)
        pixels, logits, means, _, coeffs = self._split(x_like, out)
        w = jax.nn.softmax(logits, -1)[..., None]
        coef = jnp.tanh(coeffs)
        ys, i = [], 0
        for c in range(self.channels):
            m = means[..., c]
            for j in range(c):
                m = m + coef[..., i] * jnp.clip(ys[j], -1, 1)[..., None]
                i += 1
            ys.append(jnp.sum(w[..., 0] * m, -1))
        y = jnp.stack(ys, -1)  # (..., P, C)
        return jnp.clip((y.reshape(x_like.shape) + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, key, out):
        x_like = self._x_like(out)
        pixels, logits, means, log_scales, coeffs = self._split(x_like, out)
        k_comp, k_u = jax.random.split(key)
        comp = jax.random.categorical(k_comp, logits, axis=-1)
        pick = lambda v: jnp.take_along_axis(v, comp[..., None, None], axis=-2)[..., 0, :]
        mu, ls, co = pick(means), pick(log_scales), jnp.tanh(pick(coeffs)) if self._num_coeffs else None
        u = jax.random.uniform(k_u, mu.shape, mu.dtype, 1e-5, 1.0 - 1e-5)
        noise = jnp.exp(ls) * (jnp.log(u) - jnp.log1p(-u))
        ys, i = [], 0
        for c in range(self.channels):
            m = mu[..., c]
            for j in range(c):
                m = m + co[..., i] * ys[j]
                i += 1
            ys.append(jnp.clip(m + noise[..., c], -1.0, 1.0))
        y = jnp.stack(ys, -1).reshape(x_like.shape)
        return jnp.round((y + 1.0) / 2.0 * 255.0) / 255.0
