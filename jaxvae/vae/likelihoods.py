"""Observation models p(x|z): which heads the decoder outputs, and the density of x given them.

Each likelihood is a small frozen object registered by name (``model.likelihood``):
``heads(x_dim)`` lists the decoder's output layers as (name, width, zero_init), ``log_prob(x, out)``
sums over pixels, ``mean(out)`` is E[x|z] (pictures), ``sample(key, out)`` draws x ~ p(x|z).
``out`` is the decoder's output: one array for a single head, else a tuple in the heads' order.
"""

from __future__ import annotations

import dataclasses

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
