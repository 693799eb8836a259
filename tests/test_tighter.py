"""MIWAE / CIWAE / PIWAE / RWS (jaxvae.vae.tighter): limits that must hold exactly on the same draws,
surrogate gradients equal to jax.grad of the reference bounds, and RWS's wake-phi expectation against the
closed-form gradient of -KL(p(z|x) || q(z|x)) on the linear-Gaussian model."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxvae.vae import distributions as D
from jaxvae.vae import objectives as O
from jaxvae.vae import tighter as T
from jaxvae.vae.model import VAE
from jaxvae.vae.registry import OBJECTIVES

fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
MODEL = VAE(6, 2, encoder_hidden=(5,), decoder_hidden=(5,), likelihood="bernoulli")


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)  # away from zero biases: every gradient coordinate non-trivial
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    x = (jax.random.uniform(jax.random.key(2), (4, 6)) > 0.5).astype(jnp.float32)
    return params, x


def _grad(loss, params, x, key):
    return jax.grad(lambda p: loss(p, x, key)[0])(params)


def _close(a, b, rtol=2e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def test_registered_with_their_options():
    for name in ("miwae", "ciwae", "piwae", "rws", "rws_dreg"):
        assert name in OBJECTIVES
    # the config passes every objective.* field to every objective: the others ignore m and beta_ciwae
    O.make_loss_fn(MODEL, "iwae", k=3, m=2, beta_ciwae=0.5)


def test_miwae_and_ciwae_limits_on_the_same_draws(setup):
    """MIWAE(1, K) = IWAE_K, MIWAE(M, 1) = ELBO_M (MC KL), CIWAE(1) = ELBO_K, CIWAE(0) = IWAE_K: equal up to
    float32 rounding of the same sums (values and gradients), since all draw with split(key, n)."""
    params, x = setup
    key = jax.random.key(3)
    K, M = 5, 4
    pairs = [
        (lambda p, x, k: T.miwae_loss(MODEL, p, x, k, m=1, k=K), lambda p, x, k: O.iwae_loss(MODEL, p, x, k, num_samples=K)),
        (lambda p, x, k: T.miwae_loss(MODEL, p, x, k, m=M, k=1),
         lambda p, x, k: O.elbo_loss(MODEL, p, x, k, num_samples=M, analytic_kl=False)),
        (lambda p, x, k: T.ciwae_loss(MODEL, p, x, k, k=K, beta_ciwae=1.0),
         lambda p, x, k: O.elbo_loss(MODEL, p, x, k, num_samples=K, analytic_kl=False)),
        (lambda p, x, k: T.ciwae_loss(MODEL, p, x, k, k=K, beta_ciwae=0.0), lambda p, x, k: O.iwae_loss(MODEL, p, x, k, num_samples=K)),
    ]

    @fast_jit
    def run(params):
        return [((a(params, x, key)[0], _grad(a, params, x, key)), (b(params, x, key)[0], _grad(b, params, x, key)))
                for a, b in pairs]

    for (va, ga), (vb, gb) in run(params):
        np.testing.assert_allclose(va, vb, rtol=1e-6)
        _close(ga, gb)
    # and MIWAE(M, K) is between: mean of M IWAE_K <= IWAE_{MK} on the same draws (Jensen, per draw)
    loss, m = fast_jit(lambda p: T.miwae_loss(MODEL, p, x, key, m=M, k=K))(params)
    assert m["miwae"] <= m["iwae"] + 1e-6 and np.isclose(-loss, m["miwae"])


def test_piwae_gradients_are_iwae_for_the_decoder_and_miwae_for_the_encoder(setup):
    params, x = setup
    M, K = 3, 4

    @fast_jit
    def grads(key):
        g = _grad(lambda p, x, k: T.piwae_loss(MODEL, p, x, k, m=M, k=K), params, x, key)
        g_iwae = _grad(lambda p, x, k: O.iwae_loss(MODEL, p, x, k, num_samples=M * K), params, x, key)
        g_miwae = _grad(lambda p, x, k: T.miwae_loss(MODEL, p, x, k, m=M, k=K), params, x, key)
        loss, _ = T.piwae_loss(MODEL, params, x, key, m=M, k=K)
        return g, g_iwae, g_miwae, loss, O.iwae_loss(MODEL, params, x, key, num_samples=M * K)[0]

    for seed in range(2):
        g, g_iwae, g_miwae, loss, loss_iwae = grads(jax.random.key(10 + seed))
        _close(g["decoder"], g_iwae["decoder"])
        _close(g["encoder"], g_miwae["encoder"])
        np.testing.assert_allclose(loss, loss_iwae, rtol=1e-6)
        # the two references differ (else the test could not tell them apart)
        assert not np.allclose(ravel_pytree(g_iwae["encoder"])[0], ravel_pytree(g_miwae["encoder"])[0], rtol=1e-2)


def test_rws_decoder_gradient_is_iwae_and_encoder_gradient_is_wake_phi(setup):
    params, x = setup
    K = 6
    key = jax.random.key(4)

    def wake_phi(p):  # sum_k w~_k log q_phi(z_k|x) with z_k and w~ fixed, from the same draws
        post = MODEL.encode(params, x)
        z, log_q, _ = jax.vmap(lambda k: MODEL.sample_posterior(post, k))(jax.random.split(key, K))
        w = jax.nn.softmax(jax.vmap(lambda zi: MODEL.log_joint(params, x, zi))(z) - log_q, axis=0)
        post_p = MODEL.encode(p, x)
        return -jnp.sum(w * D.gaussian_log_prob(z, post_p.mu, post_p.logvar), 0).mean()

    @fast_jit
    def grads():
        return (_grad(lambda p, x, k: T.rws_loss(MODEL, p, x, k, k=K), params, x, key),
                _grad(lambda p, x, k: O.iwae_loss(MODEL, p, x, k, num_samples=K), params, x, key),
                jax.grad(wake_phi)(params), T.rws_loss(MODEL, params, x, key, k=K)[0],
                O.iwae_loss(MODEL, params, x, key, num_samples=K)[0])

    g, g_iwae, g_phi, loss, loss_iwae = grads()
    _close(g["decoder"], g_iwae["decoder"])
    _close(g["encoder"], g_phi["encoder"])
    np.testing.assert_allclose(loss, loss_iwae, rtol=1e-6)


def _exact_posterior_kl_grad(lg, params, x):
    """grad_phi of -mean_x KL(p(z|x) || q_phi(z|x)) = grad_phi mean_x E_p[log q_phi(z|x)] in closed form
    (p(z|x) = N(m, S) diagonal on this model): E_p log q = sum_j -1/2 [log 2 pi + lv_j + (S_j + (m_j - mu_j)^2) e^-lv_j]."""
    true = lg.model.encode(lg.params(), x)
    m, s = true.mu, jnp.exp(true.logvar)

    def f(p):
        q = lg.model.encode(p, x)
        return jnp.sum(-0.5 * (D.LOG_2PI + q.logvar + (s + jnp.square(m - q.mu)) * jnp.exp(-q.logvar)), -1).mean()

    return jax.grad(f)(params)["encoder"]


@pytest.mark.parametrize("name", ["rws", "rws_dreg"])
def test_expected_wake_phi_gradient_is_minus_grad_kl_p_q(linear_gaussian, name):
    """E[wake-phi] -> grad_phi [-KL(p(z|x) || q(z|x))]. Self-normalized weights bias it by O(1/K) (measured
    max |bias| 0.025, 0.006, 0.002 at K = 50, 200, 1000 for the low-variance DReG form); at K = 1000 that is
    below the standard error of R = 200 draws, so each coordinate must lie within 4.5 standard errors."""
    lg = linear_gaussian
    x = jnp.asarray(lg.x)
    params = lg.params(mu_shift=0.4, logvar_shift=0.5)
    K, R = 1000, 200
    loss = O.make_loss_fn(lg.model, name, k=K)

    @fast_jit
    def draws(keys):
        return jax.vmap(lambda k: ravel_pytree(jax.grad(lambda p: loss(p, x, k)[0])(params)["encoder"])[0])(keys)

    g = -np.asarray(draws(jax.random.split(jax.random.key(5), R)), np.float64)  # ascent direction
    exact = np.asarray(ravel_pytree(_exact_posterior_kl_grad(lg, params, x))[0], np.float64)
    se = g.std(0, ddof=1) / math.sqrt(R)
    z = (g.mean(0) - exact) / (se + 1e-9)
    assert np.abs(exact).max() > 0.1  # the encoder is off the posterior: a real gradient to match
    assert np.max(np.abs(z)) < 4.5, (g.mean(0), exact, se)
    # negative control: the reverse-KL direction grad_phi [-KL(q || p)] (what the ELBO follows) differs
    rev = -np.asarray(ravel_pytree(jax.grad(lambda p: O.elbo_loss(lg.model, p, x, jax.random.key(0))[0])(params)["encoder"])[0])
    assert np.max(np.abs((g.mean(0) - rev) / (se + 1e-9))) > 10
