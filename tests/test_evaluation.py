"""Evaluation estimators: chunked large-K IWAE, aggregate posterior density, ELBO surgery, active units."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.vae import evaluation as E
from jaxvae.vae import objectives as O
from jaxvae.vae.model import VAE

# Compile with LLVM optimisations off: these tests run small programs, so compile time dominates (~3x faster).
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

MODEL = VAE(6, 2, encoder_hidden=(8,), decoder_hidden=(8,), likelihood="bernoulli")


@pytest.fixture(scope="module")
def setup():
    params = fast_jit(MODEL.init)(jax.random.key(0))
    x = (jax.random.uniform(jax.random.key(1), (4, 6)) > 0.5).astype(jnp.float32)
    return params, x


def test_chunked_iwae_equals_the_same_weights_unchunked(setup):
    """K = 1000 in chunks of 300 (the last chunk has 100 valid of 300 draws): equals log_mean_exp of the
    first 1000 weights drawn chunk by chunk with the same fold_in keys; K <= chunk is plain iwae_bound."""
    params, x = setup
    key = jax.random.key(2)

    @fast_jit
    def run(params, key):
        chunked = E.iwae_bound_chunked(MODEL, params, x, key, 1000, chunk_size=300)
        post = MODEL.encode(params, x)
        lw = jnp.concatenate([O.log_weights_from_posterior(MODEL, params, x, post,
                                                           jax.random.fold_in(key, i), 300)[0]
                              for i in range(4)])
        small = E.iwae_bound_chunked(MODEL, params, x, key, 200, chunk_size=500)
        plain = O.iwae_bound(MODEL, params, x, jax.random.fold_in(key, 0), 200)
        return chunked, lw, small, plain

    chunked, lw, small, plain = run(params, key)
    lw = np.asarray(lw, np.float64)
    assert lw.shape == (1200, 4)

    def lme(a):
        m = a.max(0)
        return m + np.log(np.mean(np.exp(a - m), 0))

    np.testing.assert_allclose(chunked, lme(lw[:1000]), rtol=1e-5, atol=1e-5)
    # including the 200 masked draws would give a different number: the mask matters
    assert np.max(np.abs(lme(lw) - lme(lw[:1000]))) > 1e-4
    np.testing.assert_allclose(small, plain, rtol=1e-5, atol=1e-5)


def test_chunked_iwae_memory_does_not_grow_with_k(setup):
    params, x = setup

    def temp_bytes(fn, k):
        compiled = fast_jit(lambda p, key: fn(MODEL, p, x, key, k)).lower(params, jax.random.key(0)).compile()
        stats = compiled.memory_analysis()
        if stats is None:
            pytest.skip("memory_analysis() not available on this backend")
        return stats.temp_size_in_bytes

    chunked = lambda m, p, x, key, k: E.iwae_bound_chunked(m, p, x, key, k, chunk_size=250)
    small, big = temp_bytes(chunked, 500), temp_bytes(chunked, 5000)
    assert big <= 1.1 * small + 4096, (small, big)
    # the unchunked bound materialises all K samples: its temp memory grows ~10x (so the check has power)
    assert temp_bytes(O.iwae_bound, 5000) > 5 * temp_bytes(O.iwae_bound, 500)


def test_linear_gaussian_log_px_matches_reference(linear_gaussian):
    fn = getattr(E, "linear_gaussian_log_px", None)
    if fn is None:
        pytest.skip("evaluation.linear_gaussian_log_px not present")
    lg = linear_gaussian
    got = fast_jit(fn, static_argnums=0)(lg.model, lg.params(), jnp.asarray(lg.x))
    np.testing.assert_allclose(got, lg.log_px(), rtol=1e-5, atol=1e-4)


# -- aggregate posterior and ELBO surgery -----------------------------------------------------------

def _posteriors(n=30, d=2, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * spread).astype(np.float32), rng.uniform(-2, 0, size=(n, d)).astype(np.float32)


def _log_q_aggregate(z, mu, logvar):
    """log (1/N) sum_n N(z; mu_n, diag exp(logvar_n)), float64 numpy."""
    z, mu, logvar = (np.asarray(a, np.float64) for a in (z, mu, logvar))
    lq = -0.5 * np.sum(np.log(2 * np.pi) + logvar[None] + (z[:, None] - mu[None]) ** 2 / np.exp(logvar[None]), -1)
    m = lq.max(1, keepdims=True)
    return (m + np.log(np.exp(lq - m).sum(1, keepdims=True)))[:, 0] - np.log(mu.shape[0])


def test_aggregate_log_density_matches_direct_sum():
    mu, logvar = _posteriors(n=23)
    z = np.random.default_rng(1).normal(size=(17, 2)).astype(np.float32) * 2
    got = fast_jit(E.aggregate_log_density, static_argnums=3)(z, mu, logvar, 5)  # 23 = 4 * 5 + 3: padding
    np.testing.assert_allclose(got, _log_q_aggregate(z, mu, logvar), rtol=1e-5, atol=1e-5)


def _mi_monte_carlo(mu, logvar, key, s):
    """Independent estimate of I_q(x; z) = E_{n, z ~ q(z|x_n)}[log q(z|x_n) - log q(z)] and its SE."""
    n, d = mu.shape
    eps = np.asarray(jax.random.normal(key, (s, n, d)), np.float64)
    z = mu[None] + np.exp(0.5 * logvar[None]) * eps  # (s, n, d)
    log_cond = -0.5 * np.sum(np.log(2 * np.pi) + logvar[None] + eps**2, -1).reshape(-1)
    terms = log_cond - _log_q_aggregate(z.reshape(-1, d), mu, logvar)
    return terms.mean(), terms.std() / math.sqrt(terms.size)


def test_elbo_surgery_identity_with_independent_mutual_information():
    """mean_n KL(q(z|x_n) || p) = I_q(x; z) + KL(q(z) || p): the library's I (mean KL - marginal KL) agrees
    with a direct Monte Carlo estimate of I within 5 combined standard errors, and 0 <= I <= log N."""
    mu, logvar = _posteriors()
    surgery = fast_jit(E.elbo_surgery, static_argnums=(3, 4))
    out = {k: float(v) for k, v in surgery(mu, logvar, jax.random.key(0), 200, 1000).items()}
    mi, mi_se = _mi_monte_carlo(mu.astype(np.float64), logvar.astype(np.float64), jax.random.key(1), 200)
    mean_kl = float(np.mean(0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, -1)))
    np.testing.assert_allclose(out["mean_kl"], mean_kl, rtol=1e-5)
    np.testing.assert_allclose(out["mean_kl"], out["mutual_information"] + out["marginal_kl"], rtol=1e-5)
    assert abs(out["mutual_information"] - mi) < 5 * math.sqrt(out["marginal_kl_stderr"] ** 2 + mi_se**2)
    assert 0.0 < mi < math.log(30) and out["mutual_information_max"] == pytest.approx(math.log(30))
    assert 5 * mi_se < 0.1 * mi  # the comparison is precise enough to matter
    assert out["marginal_kl"] > 0


def test_elbo_surgery_extremes():
    """Identical posteriors: q(z) = q(z|x) so I = 0 and marginal KL = mean KL. Well-separated, narrow
    posteriors: q(z|x_n) does not overlap the others, so I = log N."""
    mu1, lv1 = _posteriors(n=10)
    mu = np.repeat(mu1[:1], 10, axis=0)
    lv = np.repeat(lv1[:1], 10, axis=0)
    surgery = fast_jit(E.elbo_surgery, static_argnums=(3, 4))
    out = surgery(mu, lv, jax.random.key(0), 500, 1000)
    se = float(out["marginal_kl_stderr"])
    assert abs(float(out["mutual_information"])) < 5 * se
    assert abs(float(out["marginal_kl"] - out["mean_kl"])) < 5 * se
    mi, _ = _mi_monte_carlo(mu.astype(np.float64), lv.astype(np.float64), jax.random.key(1), 50)
    assert abs(mi) < 1e-9  # log q(z|x_n) - log q(z) is exactly 0 here

    n = 16
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(n, 2).astype(np.float32) * 3.0
    out = surgery(grid, np.full((n, 2), -6.0, np.float32), jax.random.key(2), 50, 1000)
    # overlap ~ exp(-(3 / (2 sigma))^2 / 2) with sigma = e^-3: utterly negligible
    np.testing.assert_allclose(out["mutual_information"], math.log(n), atol=0.05)


def test_active_units():
    rng = np.random.default_rng(0)
    n = 2000
    mu = np.stack([rng.normal(size=n),  # var 1: active
                   0.5 * rng.normal(size=n),  # var 0.25: active
                   0.05 * rng.normal(size=n),  # var 0.0025: inactive
                   np.full(n, 3.0)], -1)  # constant: inactive
    assert int(fast_jit(E.active_units)(jnp.asarray(mu, jnp.float32))) == 2
    assert int(E.active_units(jnp.asarray(mu, jnp.float32), threshold=1e-3)) == 3
