"""Priors p(z): objects with ``init``, ``log_prob`` and ``sample``, registered by name (``model.prior``).

A prior sees the whole parameter pytree (a VampPrior's density uses the encoder) and keeps its own
parameters, if any, under ``params["prior"]``. Its dataclass fields are its options, set in the config
under ``model.prior_options`` (jaxvae.vae.registry.build).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

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


def _mixture_log_prob(z: jax.Array, mu: jax.Array, logvar: jax.Array, log_weights: jax.Array) -> jax.Array:
    """log sum_k pi_k N(z; mu_k, diag exp(logvar_k)) for z (..., d) and K components (K, d), by a
    stable logsumexp over k."""
    comp = D.gaussian_log_prob(z[..., None, :], mu, logvar)  # (..., K)
    return jax.nn.logsumexp(comp + log_weights, axis=-1)


def _mixture_sample(key, mu, logvar, log_weights, num: int):
    k_comp, k_eps = jax.random.split(key)
    idx = jax.random.categorical(k_comp, log_weights, shape=(num,))
    return D.gaussian_sample(k_eps, mu[idx], logvar[idx])


@register_prior("vampprior")
@dataclasses.dataclass(frozen=True)
class VampPrior:
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), a mixture of the encoder's
    Gaussian posteriors at K learned pseudo-inputs u_k (``params["prior"]["pseudo_inputs"]``, (K, x_dim)):

        log p(z) = logsumexp_k log N(z; mu(u_k), diag sigma^2(u_k)) - log K.

    With a flow posterior the components are the encoder's base Gaussians q_0(z|u_k) (the flow's density
    at z would need its inverse); it is a valid prior either way. The density depends on the encoder's
    parameters: gradients of log p(z) reach them (a generative-model gradient, kept by STL/DReG, which
    only hold fixed the parameters of q(z|x) for the data x). No analytic KL: the ELBO uses Monte Carlo.

    Init: pseudo-inputs N(0.5, 0.01^2) per pixel (``init_from="random"``), or K training examples when
    the runner passes data (``init_from="data"``: ``VAE.init(..., data=...)`` -> ``init_from_data``).
    Options (``model.prior_options``): ``components``, ``init_from``.
    """

    components: int = 500  # K pseudo-inputs
    init_from: str = "data"  # data (K training examples) | random (N(0.5, 0.01^2))

    def __post_init__(self):
        if self.init_from not in ("data", "random"):
            raise ValueError(f"vampprior init_from={self.init_from!r} is not one of data, random")

    @property
    def from_data(self) -> bool:
        return self.init_from == "data"

    def init(self, key, model):
        return {"pseudo_inputs": 0.5 + 0.01 * jax.random.normal(key, (self.components, model.x_dim))}

    def init_from_data(self, key, model, prior_params, data):
        """K distinct training examples as the initial pseudo-inputs (when ``from_data``)."""
        if not self.from_data:
            return prior_params
        n = len(data)
        idx = np.asarray(jax.random.choice(key, n, (self.components,), replace=self.components > n))
        u = np.asarray(data[np.sort(idx)], dtype=np.float32).reshape(self.components, model.x_dim)
        return {"pseudo_inputs": jnp.asarray(u)}

    def components_of(self, model, params):
        post = model.encode(params, params["prior"]["pseudo_inputs"])
        return post.mu, post.logvar

    def log_prob(self, model, params, z):
        mu, logvar = self.components_of(model, params)
        return _mixture_log_prob(z, mu, logvar, jnp.full((mu.shape[0],), -math.log(mu.shape[0])))

    def sample(self, model, params, key, num: int):
        mu, logvar = self.components_of(model, params)
        return _mixture_sample(key, mu, logvar, jnp.zeros((mu.shape[0],)), num)


@register_prior("mog")
@dataclasses.dataclass(frozen=True)
class MixtureOfGaussians:
    """Mixture-of-Gaussians prior p(z) = sum_k pi_k N(z; m_k, diag s_k^2) with learned means, log-variances
    and logits (``params["prior"]``: means (K, d), logvars (K, d), logits (K,)); pi = softmax(logits).
    Init: means N(0, 1), logvars 0, logits 0. No analytic KL (Monte Carlo in the ELBO).
    Options (``model.prior_options``): ``components``."""

    components: int = 500  # K components (the default shared with the VampPrior's option of that name)

    def init(self, key, model):
        k = self.components
        return {"means": jax.random.normal(key, (k, model.latent_dim)),
                "logvars": jnp.zeros((k, model.latent_dim)), "logits": jnp.zeros((k,))}

    def log_prob(self, model, params, z):
        p = params["prior"]
        return _mixture_log_prob(z, p["means"], p["logvars"], jax.nn.log_softmax(p["logits"]))

    def sample(self, model, params, key, num: int):
        p = params["prior"]
        return _mixture_sample(key, p["means"], p["logvars"], p["logits"], num)
