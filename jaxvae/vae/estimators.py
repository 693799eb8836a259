"""What the objectives (objectives.py) and the tighter bounds (tighter.py) share, below both of them:
the stable log-mean-exp of log importance weights and the check that a path-derivative estimator
(STL, DReG, RWS) applies to a model."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvae.vae.model import VAE


def log_mean_exp(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """log (1/K) sum_k exp(log_w_k), stable for log-weights spread over hundreds of nats.

    Computed in at least float32 (bfloat16 inputs are upcast) so that K up to thousands stays exact.
    """
    log_w = log_w.astype(jnp.promote_types(log_w.dtype, jnp.float32))
    return jax.nn.logsumexp(log_w, axis=axis) - math.log(log_w.shape[axis])


def check_path_estimator(model: VAE, name: str) -> None:
    """ValueError unless the ``name`` estimator applies: it evaluates log q(z|x) with q's parameters held
    fixed, which a flow posterior cannot (it would need the flow's inverse)."""
    if model.has_flow:
        raise ValueError(
            f"the {name} estimator needs log q(z|x) with its parameters held fixed, which for a flow "
            "posterior would need the flow's inverse; use objective.name='elbo' or 'iwae' with flows"
        )
