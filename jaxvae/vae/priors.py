"""Priors p(z): objects with ``init``, ``log_prob`` and ``sample``, registered by name (``model.prior``).

A prior sees the whole parameter pytree (a VampPrior's density uses the encoder) and keeps its own
parameters, if any, under ``params["prior"]``.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxvae.vae import distributions as D
from jaxvae.vae.registry import register_prior


@register_prior("standard_normal")
@dataclasses.dataclass(frozen=True)
class StandardNormal:
    """p(z) = N(0, I): log p(z) = -1/2 sum_j [log 2pi + z_j^2]; no parameters."""

    def init(self, key, model):
        return None

    def log_prob(self, model, params, z):
        return D.standard_normal_log_prob(z)

    def sample(self, model, params, key, num: int):
        return jax.random.normal(key, (num, model.latent_dim))

    def analytic_kl(self, mu, logvar):
        """KL(N(mu, diag sigma^2) || p(z)) in closed form (None where a prior has none)."""
        return D.kl_standard_normal(mu, logvar)
