"""Extending jaxvae from an experiment file: a custom bound, prior and flow, each a few lines plus one
registry line (docs/extending.md walks through it). They run through ./launch.sh, vectorized groups, the
evaluation and the report like the built-in ones:

    ./launch.sh experiments/custom_parts.py && python -m jaxvae.sweeps.report runs/custom_parts
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxvae import register_flow, register_objective, register_prior
from jaxvae.experiment.configs import base_config
from jaxvae.vae import distributions as D


@register_objective("vr")
def renyi_bound(model, params, x, key, *, k=5, alpha=0.5, **_):
    """Variational Renyi bound (Li & Turner 2016): L_alpha = 1/(1-alpha) log mean_k w_k^(1-alpha).

    alpha = 0 is IWAE_k exactly; alpha -> 1 tends to the k-sample ELBO."""
    post = model.encode(params, x)

    def log_w(key):
        z, log_q, _ = model.sample_posterior(post, key)
        return model.log_joint(params, x, z) - log_q

    lw = jax.vmap(log_w)(jax.random.split(key, k))                       # (k, batch)
    bound = (jax.nn.logsumexp((1 - alpha) * lw, 0) - math.log(k)) / (1 - alpha)
    return -bound.mean(), {"vr": bound.mean()}


@register_prior("scaled_normal")
@dataclasses.dataclass(frozen=True)
class ScaledNormal:
    """p(z) = N(0, s^2 I) with one learned log-scale log s (params["prior"]["log_scale"])."""

    def init(self, key, model):
        return {"log_scale": jnp.zeros(())}

    def log_prob(self, model, params, z):
        s = params["prior"]["log_scale"]
        return D.standard_normal_log_prob(z * jnp.exp(-s)) - z.shape[-1] * s

    def sample(self, model, params, key, num):
        return jnp.exp(params["prior"]["log_scale"]) * jax.random.normal(key, (num, model.latent_dim))


@register_flow("affine")
@dataclasses.dataclass(frozen=True)
class Affine:
    """Elementwise affine layers z' = z * exp(a) + b: log|det| = sum_j a_j."""

    def param_shapes(self, dim):
        return {"a": (dim,), "b": (dim,)}

    def layer(self, params, z):
        return z * jnp.exp(params["a"]) + params["b"], jnp.sum(params["a"], -1) * jnp.ones(z.shape[:-1])


def get_config():
    c = base_config()
    c.name = "custom_parts"
    c.data.name = "digits"
    c.data.binarize = "dynamic"
    c.model.latent_dim = 8
    c.model.encoder_hidden = (64,)
    c.model.decoder_hidden = (64,)
    c.model.prior = "scaled_normal"
    c.model.flow = "affine"
    c.model.flow_length = 2
    c.objective.name = "vr"
    c.objective.k = 5
    c.objective.options.alpha = 0.5  # reaches renyi_bound as the keyword `alpha`
    c.train.batch_size = 50
    c.train.num_epochs = 20
    c.eval.ks = (1, 5, 50)
    return c


def get_sweep():
    from jaxvae.sweeps import product

    return product({"seed": [0, 1]})
