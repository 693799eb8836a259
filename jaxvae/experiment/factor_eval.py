"""Test-set numbers for the write-up's claims: rate and distortion, and disentanglement against known factors.

``rate_distortion(test)``: the rate R = E_x[KL(q(z|x) || p(z))] and distortion D = -E_x E_q[log p(x|z)]
(Alemi et al. 2018, "Fixing a broken ELBO") are the two terms of the test ELBO that ``evaluate_split``
already computed, from the same z draws, so R + D = -ELBO (to float32 rounding of the per-example
difference). The ELBO-surgery split of R (mutual information + marginal KL) sits beside them in results.json.

``factor_metrics(...)``: MIG and DCI (``jaxvae.vae.disentanglement``) of the encoder means E_q[z|x] of the
evaluated test examples against the data set's ground-truth factors, when it has them (``factors_toy``).

``sample_quality(...)``: on ``factors_toy`` only, where the data manifold is known, how far decoded prior
samples mu_theta(z), z ~ N(0, I), fall from it (``factors_toy.manifold_residual``): the sample side of
the write-up's "tension between sample quality and reconstruction".
"""

from __future__ import annotations

import jax
import numpy as np

from jaxvae.vae.disentanglement import disentanglement_metrics

__all__ = ["rate_distortion", "factor_metrics", "encoder_means", "sample_quality", "SAMPLE_QUALITY_SAMPLES"]

SAMPLE_QUALITY_SAMPLES = 2000


def rate_distortion(test: dict) -> dict:
    """{"rate": KL term, "distortion": -reconstruction term} of the test ELBO dict ``test``."""
    return {"rate": float(test["kl"]), "distortion": -float(test["reconstruction"])}


def encoder_means(model, params, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """(N, d) means mu(x) of the base Gaussian q_0(z|x) (before any flow), ``batch_size`` examples at a time."""
    encode = jax.jit(lambda p, xb: model.encode(p, xb).mu)
    return np.concatenate([np.asarray(encode(params, x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)]) if len(x) else np.zeros((0, model.latent_dim))


def factor_metrics(model, params, x: np.ndarray, factors: np.ndarray | None, factor_names) -> dict:
    """{"disentanglement": MIG and DCI dict} for test examples ``x`` with ``factors``; {} without factors."""
    if factors is None or factor_names is None or len(x) < 10:
        return {}
    mu = encoder_means(model, params, np.asarray(x, np.float32))
    return {"disentanglement": disentanglement_metrics(mu, np.asarray(factors), factor_names)}


def sample_quality(model, params, key: jax.Array, dataset_name: str, num_samples: int = SAMPLE_QUALITY_SAMPLES
                   ) -> dict:
    """{"sample_manifold_rmse": sqrt(mean over z ~ N(0, I) of manifold_residual(mu_theta(z)))} on
    factors_toy (pixel units; the data's own noise is 0.02); {} for other data sets."""
    if dataset_name != "factors_toy":
        return {}
    from jaxvae.data.factors_toy import manifold_residual  # noqa: PLC0415

    z = jax.random.normal(key, (num_samples, model.latent_dim))
    means = np.asarray(jax.jit(model.mean_image)(params, z))
    return {"sample_manifold_rmse": float(np.sqrt(np.mean(manifold_residual(means))))}
