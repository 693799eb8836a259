"""Evaluation estimators: large-K IWAE bounds in bounded memory, active units, ELBO surgery.

All functions are pure; dataset-level drivers (padding, masks, batching) live in the runner.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae.model import VAE, Params
from jaxvae.vae.objectives import log_weights_from_posterior


def iwae_bound_chunked(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
                       chunk_size: int = 500) -> jax.Array:
    """Per-example L_K = log (1/K) sum_k w_k for large K (e.g. K = 5000, the log p(x) estimate).

    The K samples are drawn ``chunk_size`` at a time inside a ``lax.scan`` that carries a running
    (max, sum of exp) pair, so memory is O(chunk_size x batch) whatever K is. When K is not a multiple
    of the chunk size, the surplus draws of the last chunk are masked out with log w = -inf.
    """
    chunk = min(chunk_size, num_samples)
    n_chunks = -(-num_samples // chunk)
    post = model.encode(params, x)
    batch = x.shape[0]

    def step(carry, i):
        run_max, run_sum = carry
        log_w, _ = log_weights_from_posterior(model, params, x, post, jax.random.fold_in(key, i), chunk)
        valid = (i * chunk + jnp.arange(chunk)) < num_samples
        log_w = jnp.where(valid[:, None], log_w.astype(jnp.float32), -jnp.inf)
        new_max = jnp.maximum(run_max, log_w.max(0))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.exp(log_w - new_max).sum(0)
        return (new_max, run_sum), None

    init = (jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32))
    (run_max, run_sum), _ = jax.lax.scan(step, init, jnp.arange(n_chunks))
    return run_max + jnp.log(run_sum) - math.log(num_samples)


def active_units(mu: jax.Array, threshold: float = 1e-2) -> jax.Array:
    """Number of latent units j with A_j = Cov_x(E_{q(z|x)}[z_j]) > threshold (Burda et al. 2015).

    ``mu`` holds E_q[z] for every example of the data set: shape (N, d). (For a flow posterior pass the
    Monte Carlo mean of z_L.)
    """
    return jnp.sum(jnp.var(mu, axis=0) > threshold)


def aggregate_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array, chunk_size: int = 1000):
    """log q(z) = log (1/N) sum_n q(z|x_n) for the aggregate posterior of a finite data set.

    ``z``: (M, d) points; ``mu``, ``logvar``: (N, d) posteriors of all N examples. Computed over the N
    axis in chunks with a running logsumexp, so memory is O(M x chunk_size).
    """
    n = mu.shape[0]
    chunk = min(chunk_size, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    mu_p = jnp.pad(mu, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
    lv_p = jnp.pad(logvar, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
    valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)

    def step(acc, xs):
        m, lv, ok = xs
        lq = D.gaussian_log_prob(z[:, None, :], m[None], lv[None])  # (M, chunk)
        lq = jnp.where(ok[None], lq, -jnp.inf)
        return jnp.logaddexp(acc, jax.nn.logsumexp(lq, axis=1)), None

    acc, _ = jax.lax.scan(step, jnp.full((z.shape[0],), -jnp.inf), (mu_p, lv_p, valid))
    return acc - math.log(n)


def elbo_surgery(mu: jax.Array, logvar: jax.Array, key: jax.Array, num_samples: int = 1,
                 chunk_size: int = 1000) -> dict[str, jax.Array]:
    """Split the average KL term of the ELBO (Hoffman & Johnson 2016, "ELBO surgery"):

        (1/N) sum_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),

    with q(z) = (1/N) sum_n q(z|x_n) the aggregate posterior of the N examples and I_q the mutual
    information of (x, z) under q(x, z) = q(z|x) / N. (There is no "+ H(x)" term.) The average KL is
    analytic; KL(q(z)||p(z)) = E_{q(z)}[log q(z) - log p(z)] is estimated with ``num_samples`` draws
    z ~ q(z|x_n) per example, log q(z) evaluated exactly over all N; I_q is the difference.
    Needs a Gaussian q(z|x) (no flow). Returns the estimates and the standard error of the marginal KL.
    """
    n = mu.shape[0]
    mean_kl = D.kl_standard_normal(mu, logvar).mean()
    eps = jax.random.normal(key, (num_samples,) + mu.shape)
    z = (mu + jnp.exp(0.5 * logvar) * eps).reshape(-1, mu.shape[-1])
    terms = aggregate_log_density(z, mu, logvar, chunk_size) - D.standard_normal_log_prob(z)
    marginal_kl = terms.mean()
    return {
        "mean_kl": mean_kl,
        "marginal_kl": marginal_kl,
        "mutual_information": mean_kl - marginal_kl,
        "marginal_kl_stderr": terms.std() / jnp.sqrt(terms.size),
        "mutual_information_max": jnp.log(n),  # I_q(x; z) <= log N for N equally likely x
    }


def linear_gaussian_log_px(model: VAE, params: Params, x: jax.Array) -> jax.Array:
    """Exact log p(x) of the linear-Gaussian VAE x = z W + b + N(0, s^2 I), z ~ N(0, I):

        log p(x) = log N(x; b, W^T W + s^2 I)   (W: the decoder's (d, D) kernel).

    Only for a decoder with no hidden layer, identity output and a fixed-variance Gaussian likelihood.
    """
    if model.decoder_hidden or model.likelihood_name != "gaussian" or model.decoder_output_act != "identity":
        raise ValueError("exact log p(x) needs the linear-Gaussian model (no decoder hidden layers, "
                         "identity output, likelihood='gaussian')")
    w = params["decoder"]["out"]["kernel"]
    b = params["decoder"]["out"]["bias"]
    cov = w.T @ w + model.obs_variance * jnp.eye(w.shape[1], dtype=w.dtype)
    chol = jnp.linalg.cholesky(cov)
    r = jax.scipy.linalg.solve_triangular(chol, (x - b).T, lower=True)  # (D, N)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (w.shape[1] * D.LOG_2PI + logdet + jnp.sum(jnp.square(r), axis=0))
