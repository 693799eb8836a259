"""The hierarchical VAE (jaxvae.vae.hierarchical, Burda et al. 2015 section 5): one layer is today's VAE bit
for bit; two linear-Gaussian layers have an exact log p(x) and an exact, bottom-up factorized posterior."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.vae import objectives as O
from jaxvae.vae.evaluation import iwae_bound_chunked
from jaxvae.vae.hierarchical import HierarchicalVAE
from jaxvae.vae.model import VAE

fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


# ====================================================================================================
# One stochastic layer == VAE, bit for bit
# ====================================================================================================
def test_one_layer_equals_vae_bit_for_bit():
    """Same parameters (VAE.init), same keys: every loss, metric and gradient of the four objectives, the
    K=50 chunked bound, prior samples and mean images are identical (np.array_equal, not allclose)."""
    vae = VAE(12, 3, encoder_hidden=(7,), decoder_hidden=(6,))
    hier = HierarchicalVAE(12, (3,), encoder_hidden=(7,), decoder_hidden=(6,), upper_hidden=())
    x = (jax.random.uniform(jax.random.key(1), (4, 12)) < 0.4).astype(jnp.float32)
    params = vae.init(jax.random.key(0), output_bias=jnp.linspace(-1, 1, 12))
    hp = hier.init(jax.random.key(0), output_bias=jnp.linspace(-1, 1, 12))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, hp))

    @functools.partial(fast_jit, static_argnums=0)  # both models compiled alike (-O0 only saves compile time)
    def everything(model, params, key):
        out = {}
        for name in ("elbo", "elbo_stl", "iwae", "iwae_dreg"):
            fn = O.make_loss_fn(model, name, k=5)
            (loss, metrics), grads = jax.value_and_grad(fn, has_aux=True)(params, x, key)
            out[name] = (loss, metrics, grads)
        out["chunked"] = iwae_bound_chunked(model, params, x, key, 50, chunk_size=20)
        z = model.sample_prior(params, key, 3)
        out["samples"] = model.mean_image(params, z[0] if isinstance(z, tuple) else z)
        return out

    a = everything(vae, params, jax.random.key(2))
    b = everything(hier, params, jax.random.key(2))
    same = jax.tree.map(lambda u, v: bool(np.array_equal(np.asarray(u), np.asarray(v))), a, b)
    assert jax.tree.all(same), same


# ====================================================================================================
# Two linear-Gaussian layers: x = z_1 K1 + b1 + N(0, s1 I), z_1 = z_2 K2 + b2 + N(0, s2 I), z_2 ~ N(0, I)
# ====================================================================================================
D, D1, D2, S1, S2 = 4, 2, 2, 0.3, 0.5


def _two_layer_problem():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(D, D1)))
    k1 = (q1 * np.array([1.4, 0.7])).T  # (D1, D): orthogonal rows -> diagonal posterior precision of z_1
    th = 0.6
    k2 = 1.3 * np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])  # scaled rotation
    b1, b2 = rng.normal(size=D) * 0.5, rng.normal(size=D1) * 0.3
    n = 16
    z2 = rng.normal(size=(n, D2))
    z1 = z2 @ k2 + b2 + np.sqrt(S2) * rng.normal(size=(n, D1))
    x = z1 @ k1 + b1 + np.sqrt(S1) * rng.normal(size=(n, D))
    return k1, k2, b1, b2, x


def _exact_log_px(k1, k2, b1, b2, x):
    """log N(x; b2 K1 + b1, K1^T (K2^T K2 + s2 I) K1 + s1 I), float64 (independent of jaxvae)."""
    c1 = k2.T @ k2 + S2 * np.eye(D1)
    cov = k1.T @ c1 @ k1 + S1 * np.eye(D)
    r = x - (b2 @ k1 + b1)
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, r.T)
    return -0.5 * (D * np.log(2 * np.pi) + 2 * np.sum(np.log(np.diag(chol))) + np.sum(sol**2, axis=0))


def _gauss_head(kernel_mu, bias_mu, logvar):
    """An Encoder with no hidden layer: mean linear in its input, constant log-variance."""
    kernel = np.concatenate([kernel_mu, np.zeros_like(kernel_mu)], axis=1)
    bias = np.concatenate([bias_mu, logvar])
    return {"head": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}


def _two_layer_params(k1, k2, b1, b2, mu_shift=0.0):
    """Decoder = the true model; encoder = the exact posterior p(z_1|x) p(z_2|z_1) (both Gaussian with
    diagonal covariance here), the mean of q(z_1|x) optionally shifted (an imperfect encoder)."""
    c1 = np.diag(k2.T @ k2) + S2  # prior variance of z_1 (diagonal: K2's columns are orthogonal)
    prec1 = 1 / c1 + np.diag(k1 @ k1.T) / S1
    s = 1 / prec1
    a = k1.T * s[None, :] / S1  # mean(z_1|x) = x a + c
    c = (b2 / c1 - b1 @ k1.T / S1) * s + mu_shift
    prec2 = 1 + np.diag(k2 @ k2.T) / S2  # K2's rows are orthogonal
    s2 = 1 / prec2
    a2 = k2.T * s2[None, :] / S2  # mean(z_2|z_1) = (z_1 - b2) a2
    enc = {**_gauss_head(a, c, np.log(s)), "q_z2": _gauss_head(a2, -b2 @ a2, np.log(s2))}
    dec = {"out": {"kernel": jnp.asarray(k1, jnp.float32), "bias": jnp.asarray(b1, jnp.float32)},
           "p_z1": _gauss_head(k2, b2, np.full(D1, np.log(S2)))}
    return {"encoder": enc, "decoder": dec}


TWO = HierarchicalVAE(D, (D1, D2), encoder_hidden=(), decoder_hidden=(), upper_hidden=(), likelihood="gaussian",
                      obs_variance=S1)


def test_two_layer_params_match_the_model_tree():
    real = jax.eval_shape(TWO.init, jax.random.key(0))
    ours = _two_layer_params(*_two_layer_problem()[:4])
    assert jax.tree.structure(real) == jax.tree.structure(ours)
    assert jax.tree.map(jnp.shape, real) == jax.tree.map(jnp.shape, ours)


def test_two_layers_exact_posterior_gives_log_px():
    """q = p(z_1|x) p(z_2|z_1): every log weight is log p(x), so ELBO (MC KL) = IWAE_K = log p(x) to float32."""
    k1, k2, b1, b2, x = _two_layer_problem()
    log_px = _exact_log_px(k1, k2, b1, b2, x)
    params, xj = _two_layer_params(k1, k2, b1, b2), jnp.asarray(x, jnp.float32)

    @fast_jit
    def everything(params, key):
        k = jax.random.split(key, 4)
        return (O.log_weights(TWO, params, xj, k[0], 32),
                O.elbo_terms(TWO, params, xj, k[1], 3)["elbo"],
                [O.iwae_bound(TWO, params, xj, k[2], kk) for kk in (5, 50)],
                iwae_bound_chunked(TWO, params, xj, k[3], 60, chunk_size=25))

    log_w, elbo, bounds, chunked = everything(params, jax.random.key(0))
    assert log_w.shape == (32, len(x))
    np.testing.assert_allclose(log_w, np.broadcast_to(log_px, log_w.shape), atol=3e-4, rtol=1e-5)
    for v in (elbo, *bounds, chunked):
        np.testing.assert_allclose(v, log_px, atol=3e-4, rtol=1e-5)


def test_two_layers_imperfect_encoder_orders_the_bounds():
    """Shifted q(z_1|x) mean: ELBO <= IWAE_5 <= IWAE_50 <= log p(x), each gap larger than 4 standard
    errors of the difference (2000 repetitions per example; the gaps are ~0.1-1 nat, the SEs ~0.01)."""
    k1, k2, b1, b2, x = _two_layer_problem()
    log_px = _exact_log_px(k1, k2, b1, b2, x).mean()
    params, xj = _two_layer_params(k1, k2, b1, b2, mu_shift=0.8), jnp.asarray(x, jnp.float32)
    reps = 2000

    @fast_jit
    def bounds(params, key):
        def one(k):
            ka, kb, kc = jax.random.split(k, 3)
            return (O.elbo_terms(TWO, params, xj, ka, 1)["elbo"].mean(),
                    O.iwae_bound(TWO, params, xj, kb, 5).mean(), O.iwae_bound(TWO, params, xj, kc, 50).mean())

        return jax.vmap(one)(jax.random.split(key, reps))

    elbo, i5, i50 = (np.asarray(v, np.float64) for v in bounds(params, jax.random.key(3)))

    def above(hi, lo):
        d = hi - lo
        return d.mean() > 4 * d.std() / np.sqrt(len(d))

    assert above(i5, elbo) and above(i50, i5)
    assert i50.mean() < log_px  # IWAE_50 is a lower bound (its SE ~0.005 is far below the gap)
    assert log_px - i50.mean() > 4 * i50.std() / np.sqrt(reps)


def test_posterior_means_layer_two_is_rao_blackwellized():
    """E_q[z_2|x] = E[m_2(z_1)] = (m_1(x) - b2) a2 for the linear encoder; the 4000-draw average is within
    5 standard errors (per unit, var of m_2(z_1) is a2^T diag(s) a2 ~ 0.1, so the SE is ~0.005)."""
    k1, k2, b1, b2, x = _two_layer_problem()
    params, xj = _two_layer_params(k1, k2, b1, b2), jnp.asarray(x, jnp.float32)
    m1, m2 = jax.jit(TWO.posterior_means, static_argnums=3)(params, xj, jax.random.key(0), 4000)
    enc = params["encoder"]
    exact_m1 = x @ np.asarray(enc["head"]["kernel"])[:, :D1] + np.asarray(enc["head"]["bias"])[:D1]
    q2 = enc["q_z2"]["head"]
    exact_m2 = exact_m1 @ np.asarray(q2["kernel"])[:, :D2] + np.asarray(q2["bias"])[:D2]
    np.testing.assert_allclose(m1, exact_m1, atol=1e-5)
    np.testing.assert_allclose(m2, exact_m2, atol=0.03)


def test_sample_prior_and_shapes():
    model = HierarchicalVAE(10, (4, 3), encoder_hidden=(8,), decoder_hidden=(8,), upper_hidden=(5,))
    assert model.analytic_kl(None, None) is None  # Monte Carlo KL for L > 1

    def shapes(key):
        params = model.init(key)
        z = model.sample_prior(params, jax.random.fold_in(key, 1), 6)
        post = model.encode(params, jnp.zeros((2, 10)))
        zq, log_q, _ = model.sample_posterior(post, jax.random.fold_in(key, 2))
        return z, model.mean_image(params, z), zq, log_q

    z, mean, zq, log_q = jax.eval_shape(shapes, jax.random.key(0))
    assert [a.shape for a in z] == [(6, 4), (6, 3)] and mean.shape == (6, 10)
    assert [a.shape for a in zq] == [(2, 4), (2, 3)] and log_q.shape == (2,)
    with pytest.raises(ValueError, match="latent_dims"):
        HierarchicalVAE(10, ())


def test_split_sums_count_active_units_per_layer():
    """The evaluation's host reduction (shared by evaluate_split and evaluate_members) with per-layer
    posterior means: A_u = Var_x(E_q[u|x]) > 1e-2 per layer, the total their sum, masked examples dropped.
    Layer 1: units with variance 1 (active), 1e-4 (inactive), 0.04 (active); layer 2: 1 active of 2.
    (The full drivers on a 2-layer model - evaluate_split and the vmapped evaluate_members agreeing on
    NLL and per-layer units - were checked end to end; they compile for minutes, too slow for CI.)"""
    from jaxvae.experiment.eval_driver import _SplitSums

    rng = np.random.default_rng(0)
    n = 4000
    z1 = rng.normal(size=(n, 3)) * np.array([1.0, 1e-2, 0.2])
    z2 = rng.normal(size=(n, 2)) * np.array([0.5, 1e-3])
    acc = _SplitSums()
    for lo in range(0, n, 1000):
        sl = slice(lo, lo + 1000)
        mask = np.ones(1000, bool)
        out = {"elbo": np.full(1000, -90.0), "reconstruction": np.full(1000, -80.0), "kl": np.full(1000, 10.0),
               "iwae_5": np.full(1000, -88.0), "mu": (z1[sl], z2[sl]), "logvar": np.zeros((1000, 3))}
        acc.add(out, mask)
    pad = {"elbo": np.zeros(2), "reconstruction": np.zeros(2), "kl": np.zeros(2), "iwae_5": np.zeros(2),
           "mu": (np.full((2, 3), 50.0), np.full((2, 2), 50.0)), "logvar": np.zeros((2, 3))}
    acc.add(pad, np.zeros(2, bool))  # padding rows are masked out
    model = HierarchicalVAE(4, (3, 2))
    res = acc.result(model, jax.random.key(0), (5,), surgery=True, surgery_samples=1, t0=0.0)
    assert res["active_units_per_layer"] == [2, 1] and res["active_units"] == 3
    assert res["num_examples"] == n and res["nll"] == 88.0 and res["mutual_information"] is None


def test_unit_kl_sums_to_the_monte_carlo_kl_and_matches_the_closed_form():
    """(1) Two layers, one draw: the per-unit terms summed over units and layers are log q(z|x) - log p(z)
    of that draw. (2) One layer: the 4000-draw mean of each unit's term is the closed-form KL(q_u || N(0,1))
    = (sigma^2 - 1 - log sigma^2 + mu^2) / 2 within 5 standard errors; the term is
    const + (sigma^2 - 1) eps^2 / 2 + mu sigma eps, of variance (sigma^2 - 1)^2 / 2 + mu^2 sigma^2."""
    model = HierarchicalVAE(10, (4, 3), encoder_hidden=(8,), decoder_hidden=(8,), upper_hidden=(5,))
    params = model.init(jax.random.key(0))
    x = (jax.random.uniform(jax.random.key(1), (6, 10)) < 0.4).astype(jnp.float32)
    key = jax.random.key(2)
    terms = jax.jit(model.unit_kl, static_argnums=3)(params, x, key, 1)
    assert [t.shape for t in terms] == [(6, 4), (6, 3)]
    post = model.encode(params, x)
    z, log_q, _ = model.sample_posterior(post, jax.random.split(key, 1)[0])
    np.testing.assert_allclose(sum(t.sum(-1) for t in terms), log_q - model.log_prior(params, z), atol=1e-4)

    one = HierarchicalVAE(10, (4,), encoder_hidden=(8,), decoder_hidden=(8,), upper_hidden=())
    p1 = one.init(jax.random.key(3))
    p1["encoder"]["head"]["bias"] = jnp.linspace(-1.0, 1.0, 8)  # means and log-variances away from 0
    (kl_mc,) = jax.jit(one.unit_kl, static_argnums=3)(p1, x, key, 4000)
    post = one.encode(p1, x)
    mu, var = np.asarray(post.mu, np.float64), np.exp(np.asarray(post.logvar, np.float64))
    exact = 0.5 * (var - 1 - np.log(var) + mu ** 2)
    se = np.sqrt((0.5 * (var - 1) ** 2 + mu ** 2 * var) / 4000)
    assert np.all(np.abs(np.asarray(kl_mc) - exact) < 5 * se + 1e-5), (kl_mc, exact, se)
