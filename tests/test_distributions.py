"""Log-densities, KL and reparameterized sampling against independent references."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.vae import distributions as D

# Compile with LLVM optimisations off: these tests run small programs, so compile time dominates (~3x faster).
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

RNG = np.random.default_rng(1234)


def _f32(a):
    return jnp.asarray(a, jnp.float32)


# -- log-densities vs scipy / numpy (float64 references) ---------------------------------------------

def test_gaussian_log_prob_matches_scipy():
    z, mu = RNG.normal(size=(2, 7, 4))
    logvar = RNG.uniform(-3, 3, size=(7, 4))
    ref = stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(-1)
    got = fast_jit(D.gaussian_log_prob)(_f32(z), _f32(mu), _f32(logvar))
    assert got.shape == (7,)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(D.standard_normal_log_prob(_f32(z)), stats.norm.logpdf(z).sum(-1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variance", [0.1, 1.0, 3.7])
def test_gaussian_fixed_log_prob_matches_scipy(variance):
    x, mean = RNG.uniform(0, 1, size=(2, 5, 9))
    ref = stats.multivariate_normal(np.zeros(9), variance * np.eye(9)).logpdf(x - mean)
    got = fast_jit(D.gaussian_fixed_log_prob, static_argnums=2)(_f32(x), _f32(mean), variance)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_gaussian_learned_log_prob_matches_scipy():
    x, mean = RNG.normal(size=(2, 6, 9))
    logvar = RNG.uniform(-4, 2, size=(6, 9))
    ref = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum(-1)
    np.testing.assert_allclose(fast_jit(D.gaussian_learned_log_prob)(_f32(x), _f32(mean), _f32(logvar)),
                               ref, rtol=1e-5, atol=1e-4)


def test_bernoulli_log_prob_matches_naive_formula():
    logits = RNG.uniform(-8, 8, size=(10, 12))
    for x in (RNG.integers(0, 2, size=(10, 12)).astype(float), RNG.uniform(0, 1, size=(10, 12))):
        p = 1.0 / (1.0 + np.exp(-logits))
        naive = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=-1)
        np.testing.assert_allclose(fast_jit(D.bernoulli_log_prob)(_f32(x), _f32(logits)), naive,
                                   rtol=1e-5, atol=1e-4)


def test_bernoulli_extreme_logits_exact_and_finite():
    logits = _f32([100.0, -100.0, 100.0, -100.0])
    x = _f32([1.0, 0.0, 0.0, 1.0])
    per_pixel = jax.vmap(lambda xi, li: D.bernoulli_log_prob(xi[None], li[None]))(x, logits)
    # log sigmoid(100) ~ -4e-44 ~ 0; log(1 - sigmoid(100)) = -100 (the naive formula gives -inf)
    np.testing.assert_allclose(per_pixel, [0.0, 0.0, -100.0, -100.0], atol=1e-6)
    g = jax.grad(lambda l: D.bernoulli_log_prob(x, l))(logits)
    # d/dl = x - sigmoid(l)
    np.testing.assert_allclose(g, [0.0, 0.0, -1.0, 1.0], atol=1e-6)


# -- KL -----------------------------------------------------------------------------------------

def test_kl_standard_normal_closed_form_and_small_logvar():
    mu = RNG.normal(size=(5, 3))
    logvar = RNG.uniform(-2, 2, size=(5, 3))
    ref = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=-1)
    np.testing.assert_allclose(fast_jit(D.kl_standard_normal)(_f32(mu), _f32(logvar)), ref, rtol=1e-5,
                               atol=1e-6)
    # tiny KL: 1/2 (e^lv - 1 - lv) ~ lv^2 / 4 = 2.5e-9 for lv = 1e-4. expm1(lv) - lv cancels ~4 of float32's
    # 7 digits (so rtol 1e-2), while exp(lv) - 1 in float32 (ulp 6e-8 >> 5e-9) would be off by >1000%.
    lv = float(np.float32(1e-4))
    kl = D.kl_standard_normal(_f32([[0.0]]), _f32([[lv]]))
    np.testing.assert_allclose(kl, [0.5 * (math.expm1(lv) - lv)], rtol=1e-2)
    assert float(D.kl_standard_normal(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


def test_analytic_kl_equals_monte_carlo_kl():
    """KL(q||p) = E_q[log q(z) - log p(z)]; MC with S = 40000 draws, tolerance 5 standard errors."""
    mu = _f32([0.7, -1.2, 0.1])
    logvar = _f32([-1.5, 0.4, 1.0])
    S = 40_000

    @fast_jit
    def mc(key):
        z = D.gaussian_sample(key, jnp.broadcast_to(mu, (S, 3)), jnp.broadcast_to(logvar, (S, 3)))
        return D.gaussian_log_prob(z, mu, logvar) - D.standard_normal_log_prob(z)

    terms = np.asarray(mc(jax.random.key(0)), np.float64)
    se = terms.std() / math.sqrt(S)
    analytic = float(D.kl_standard_normal(mu, logvar))
    assert abs(terms.mean() - analytic) < 5 * se, (terms.mean(), analytic, se)
    assert se < 0.02 * analytic  # the test has power: a 10% KL error would be >> 5 SE


# -- sampling and the reparameterization gradient ------------------------------------------------

def test_gaussian_sample_is_mu_plus_sigma_eps():
    key = jax.random.key(3)
    mu, logvar = _f32(RNG.normal(size=(4, 3))), _f32(RNG.normal(size=(4, 3)))
    eps = jax.random.normal(key, (4, 3))
    np.testing.assert_allclose(D.gaussian_sample(key, mu, logvar), mu + jnp.exp(0.5 * logvar) * eps,
                               rtol=1e-6, atol=1e-6)


def test_reparameterization_gradient_of_quadratic():
    """f(z) = sum_j a_j (z_j - c_j)^2:  E_q f = sum_j a_j [(mu_j - c_j)^2 + exp(lv_j)], so
    d/dmu = 2 a (mu - c), d/dlv = a exp(lv). The per-sample reparameterized gradients average to these
    (S = 20000 draws; tolerance 5 standard errors per coordinate)."""
    a, c = _f32([1.0, 0.5, 2.0]), _f32([0.3, -1.0, 0.0])
    mu, lv = _f32([0.5, 0.2, -0.4]), _f32([-0.5, 0.3, 0.0])
    S = 20_000

    def f_of_sample(mu, lv, key):
        z = D.gaussian_sample(key, mu, lv)
        return jnp.sum(a * jnp.square(z - c))

    grads = fast_jit(jax.vmap(jax.grad(f_of_sample, argnums=(0, 1)), in_axes=(None, None, 0)))(
        mu, lv, jax.random.split(jax.random.key(7), S))
    exact = (2 * a * (mu - c), a * jnp.exp(lv))
    for g, ex in zip(grads, exact):
        g = np.asarray(g, np.float64)
        se = g.std(0) / math.sqrt(S)
        z = (g.mean(0) - np.asarray(ex)) / se
        assert np.all(np.abs(z) < 5), z
        assert np.all(se < 0.05 * np.abs(ex))  # non-trivial precision


# -- extreme inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lv", [-30.0, 30.0])
def test_extreme_logvar_finite_values_and_gradients(lv):
    mu = _f32([0.5, -2.0])
    logvar = _f32([lv, lv])
    z = D.gaussian_sample(jax.random.key(0), mu, logvar)
    assert np.all(np.isfinite(z))

    def total(mu, logvar):
        z = D.gaussian_sample(jax.random.key(0), mu, logvar)
        return (D.gaussian_log_prob(z, mu, logvar) + D.kl_standard_normal(mu, logvar)
                + D.gaussian_learned_log_prob(jnp.ones(2), mu, logvar) + D.standard_normal_log_prob(z))

    val, grads = fast_jit(jax.value_and_grad(total, argnums=(0, 1)))(mu, logvar)
    assert np.isfinite(val)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # the KL is exact there: 1/2 sum(e^lv + mu^2 - 1 - lv)
    ref = 0.5 * np.sum(np.exp(lv) + np.asarray(mu, np.float64) ** 2 - 1 - lv)
    np.testing.assert_allclose(D.kl_standard_normal(mu, logvar), ref, rtol=1e-5)
