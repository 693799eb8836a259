"""Log-densities, reparameterized sampling and KL divergences (all summed over the last axis).

Conventions: a diagonal Gaussian is given by its mean ``mu`` and log-variance ``logvar``
(``sigma^2 = exp(logvar)``); every function is pure and works under ``jit``/``vmap``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_sample(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Reparameterized draw z = mu + sigma * eps, eps ~ N(0, I), sigma = exp(logvar / 2)."""
    eps = jax.random.normal(key, jnp.shape(mu), dtype=jnp.result_type(mu))
    return mu + jnp.exp(0.5 * logvar) * eps


def _gaussian_terms(z, mu, logvar):
    return LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar)


def gaussian_log_prob(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mu, diag exp(logvar)) = -1/2 sum_j [log 2pi + logvar_j + (z_j - mu_j)^2 / sigma_j^2]."""
    return -0.5 * jnp.sum(_gaussian_terms(z, mu, logvar), axis=-1)


def gaussian_log_prob_per_unit(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """The terms of ``gaussian_log_prob`` unsummed: log N(z_j; mu_j, sigma_j^2) for each unit j."""
    return -0.5 * _gaussian_terms(z, mu, logvar)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) = -1/2 sum_j [log 2pi + z_j^2] (the prior p(z))."""
    return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Analytic KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2).

    ``expm1`` keeps the ``sigma^2 - 1`` part exact for small log-variances.
    """
    return 0.5 * jnp.sum(_kl_terms(mu, logvar), axis=-1)


def kl_standard_normal_per_unit(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """The terms of ``kl_standard_normal`` unsummed: each unit's KL(N(mu_j, sigma_j^2) || N(0, 1))."""
    return 0.5 * _kl_terms(mu, logvar)


def _kl_terms(mu, logvar):
    return jnp.expm1(logvar) + jnp.square(mu) - logvar


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bern(x; sigmoid(l)) = sum_i [x_i l_i - log(1 + e^{l_i})], stable for any |l|.

    Valid for x in [0, 1] (for non-binary x it is the continuous-Bernoulli-free cross-entropy
    used by most VAE code, which is not a normalized density).
    """
    return jnp.sum(x * logits - jnp.logaddexp(0.0, logits), axis=-1)


def gaussian_fixed_log_prob(x: jax.Array, mean: jax.Array, variance: float) -> jax.Array:
    """log N(x; mean, variance * I) = -n/2 log(2 pi variance) - ||x - mean||^2 / (2 variance)."""
    n = jnp.shape(x)[-1]
    return -0.5 * n * jnp.log(2.0 * jnp.pi * variance) - 0.5 * jnp.sum(
        jnp.square(x - mean), axis=-1
    ) / variance


def gaussian_learned_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, diag exp(logvar)) with a per-pixel log-variance predicted by the decoder."""
    return gaussian_log_prob(x, mean, logvar)
