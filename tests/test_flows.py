"""Planar and radial flows: log-det-Jacobians, invertibility and the change-of-variables density."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.vae import distributions as D
from jaxvae.vae import flows

# Compile with LLVM optimisations off: these tests run small programs, so compile time dominates (~3x faster).
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _random_params(key, kind, length, dim, batch=()):
    """O(1) random parameters (far from the identity, unlike flows.init_params' default scale)."""
    shapes = flows.param_shapes(kind, dim)
    keys = jax.random.split(key, len(shapes))
    return {name: 1.2 * jax.random.normal(k, (length,) + batch + shape)
            for k, (name, shape) in zip(keys, sorted(shapes.items()))}


def _layer(params, i):
    return jax.tree.map(lambda a: a[i], params)


# -- log|det J| vs autodiff Jacobians ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["planar", "radial"])
def test_log_det_matches_slogdet_of_jacobian(kind):
    dim, length = 3, 4
    layer = fast_jit(flows.LAYERS[kind])
    jac = fast_jit(jax.jacfwd(lambda p, z: flows.LAYERS[kind](p, z)[0], argnums=1))
    stack = fast_jit(lambda p, z: flows.apply(kind, p, z))
    stack_jac = fast_jit(jax.jacfwd(lambda p, z: flows.apply(kind, p, z)[0], argnums=1))
    for seed in range(5):
        kp, kz = jax.random.split(jax.random.key(seed))
        params = _random_params(kp, kind, length, dim)
        z = 1.5 * jax.random.normal(kz, (dim,))
        # per layer, following the actual trajectory z_0 -> z_1 -> ...
        zk, jac_product, total = z, np.eye(dim), 0.0
        for i in range(length):
            p_i = _layer(params, i)
            j_i = np.asarray(jac(p_i, zk), np.float64)
            sign, logabs = np.linalg.slogdet(j_i)
            z_next, log_det = layer(p_i, zk)
            assert sign > 0  # invertible, orientation-preserving layers
            np.testing.assert_allclose(log_det, logabs, rtol=1e-4, atol=1e-4)
            jac_product = j_i @ jac_product
            total += float(log_det)
            zk = z_next
        z_last, log_det_stack = stack(params, z)
        np.testing.assert_allclose(z_last, zk, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_det_stack, total, rtol=1e-5, atol=1e-4)
        # the whole stack: slogdet of d z_L / d z_0 == log|prod_k det J_k| == sum_k log|det J_k|
        sign, logabs = np.linalg.slogdet(np.asarray(stack_jac(params, z), np.float64))
        assert sign > 0
        np.testing.assert_allclose(log_det_stack, logabs, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.linalg.slogdet(jac_product)[1], logabs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["planar", "radial"])
def test_batched_and_amortized_params_match_per_example(kind):
    """Shared params broadcast over a batch of z; amortized params (L, B, ...) apply per example."""
    dim, length, batch = 2, 3, 5
    kp, ka, kz = jax.random.split(jax.random.key(0), 3)
    z = jax.random.normal(kz, (batch, dim))
    shared = _random_params(kp, kind, length, dim)
    amortized = _random_params(ka, kind, length, dim, batch=(batch,))
    @fast_jit
    def run(shared, amortized, z):
        per_example = jax.vmap(lambda zi: flows.apply(kind, shared, zi))(z)  # z_i of shape (d,) alone
        per_example_amortized = jax.vmap(lambda p, zi: flows.apply(kind, p, zi), in_axes=(1, 0))(amortized, z)
        return flows.apply(kind, shared, z), per_example, flows.apply(kind, amortized, z), per_example_amortized

    (zs, lds), (zs_1, lds_1), (za, lda), (za_1, lda_1) = run(shared, amortized, z)
    assert zs.shape == (batch, dim) and lds.shape == (batch,)
    np.testing.assert_allclose(zs, zs_1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lds, lds_1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(za, za_1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lda, lda_1, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(np.asarray(za) - np.asarray(zs))) > 0.1  # different params, different maps


# -- planar invertibility ------------------------------------------------------------------------------

def test_planar_stays_invertible_when_w_dot_u_below_minus_one():
    dim = 2
    ts = jnp.linspace(-8.0, 8.0, 801)
    g = jnp.linspace(-5, 5, 41)
    grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)

    @fast_jit
    def planar_checks(params, w_unit, perp_unit):
        lines = jnp.stack([offset * perp_unit + ts[:, None] * w_unit for offset in (-1.0, 0.0, 2.0)])
        maps = [flows.planar(params, line) for line in lines]
        jacs = jax.vmap(jax.jacfwd(lambda z: flows.planar(params, z)[0]))(grid)
        return flows.planar_u_hat(params["u"], params["w"]), lines, maps, jnp.linalg.det(jacs)

    for seed in range(5):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=dim) * rng.uniform(0.5, 3.0)
        perp = np.array([-w[1], w[0]])
        u = -rng.uniform(2.0, 6.0) * w / np.dot(w, w) + rng.normal() * perp
        b = rng.normal()
        assert np.dot(w, u) < -1.0  # the raw u would make f non-invertible
        params = {"u": jnp.asarray(u, jnp.float32), "w": jnp.asarray(w, jnp.float32),
                  "b": jnp.asarray(b, jnp.float32)}
        u_hat, lines, maps, jac_dets = planar_checks(params, jnp.asarray(w / np.linalg.norm(w), jnp.float32),
                                                     jnp.asarray(perp / np.linalg.norm(perp), jnp.float32))
        u_hat = np.asarray(u_hat, np.float64)
        assert np.dot(w, u_hat) > -1.0
        # u_hat only changes u along w: the part of u orthogonal to w is kept
        np.testing.assert_allclose(np.dot(perp, u_hat), np.dot(perp, u), rtol=1e-4, atol=1e-5)
        # f restricted to a line z = p + t w/|w| moves along w monotonically: w.f(z(t)) strictly increasing
        w_unit = w / np.linalg.norm(w)
        for line, (f, log_det) in zip(np.asarray(lines, np.float64), maps):
            s_lib = np.asarray(f, np.float64) @ w_unit
            assert np.all(np.diff(s_lib) > 0)
            assert np.all(np.isfinite(log_det))
            # negative control: the unconstrained map z + u tanh(w.z + b) folds the line over
            s_raw = (line + np.tanh(line @ w + b)[:, None] * u) @ w_unit
            assert np.any(np.diff(s_raw) < 0)
        # det J = 1 + u_hat . psi(z) > 0 on a 2-D grid (checked through the autodiff Jacobian)
        assert np.all(np.asarray(jac_dets) > 0)


# -- the change-of-variables density integrates to one ------------------------------------------------

def _inverse_planar(p, y):
    """Numerical inverse of z + u_hat tanh(w.z + b) (float64 numpy; u_hat recomputed independently)."""
    u, w, b = (np.asarray(p[k], np.float64) for k in ("u", "w", "b"))
    wu = w @ u
    u_hat = u + (-1.0 + np.log1p(np.exp(wu + np.log(np.e - 1))) - wu) * w / (w @ w)
    c = w @ u_hat
    assert c > -1
    target = y @ w  # a + c tanh(a + b) = w.y, with a = w.z, strictly increasing in a
    lo, hi = target - abs(c) - 1.0, target + abs(c) + 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        too_big = mid + c * np.tanh(mid + b) > target
        hi, lo = np.where(too_big, mid, hi), np.where(too_big, lo, mid)
    a = 0.5 * (lo + hi)
    return y - np.tanh(a + b)[:, None] * u_hat


def _inverse_radial(p, y):
    """Closed-form inverse of z + beta (z - z0) / (alpha + r): r solves r^2 + (alpha + beta - r_y) r
    - alpha r_y = 0, and z - z0 is parallel to y - z0."""
    z0 = np.asarray(p["z0"], np.float64)
    alpha = np.log1p(np.exp(float(p["alpha_raw"])))
    beta = -alpha + np.log1p(np.exp(float(p["beta_raw"])))
    diff = y - z0
    r_y = np.linalg.norm(diff, axis=-1)
    bb = alpha + beta - r_y
    r = 0.5 * (-bb + np.sqrt(bb**2 + 4 * alpha * r_y))
    return z0 + diff * (r / np.maximum(r_y, 1e-300))[:, None]


@pytest.mark.parametrize("kind", ["planar", "radial"])
def test_flow_posterior_density_integrates_to_one(kind):
    """log q_L(z_L) = log q_0(z_0) - sum_k log|det J_k|, evaluated on a grid of z_L (z_0 found by inverting
    each layer independently of jaxvae), integrates to 1 and has the mean of pushed-forward samples.
    With the log-det sign flipped the integral is far from 1 (so a sign error would be caught)."""
    length, dim = 3, 2
    mu0, lv0 = np.array([0.3, -0.2]), np.array([np.log(0.6), np.log(1.2)])
    if kind == "planar":
        params = {"u": np.array([[1.5, 0.5], [-0.8, 1.2], [2.0, 0.3]]),
                  "w": np.array([[2.0, 1.0], [0.5, -1.5], [-1.0, 2.0]]),
                  "b": np.array([0.3, -0.4, 0.1])}
        inverse = _inverse_planar
    else:
        params = {"z0": np.array([[0.5, 0.0], [-0.5, 0.7], [0.0, -0.6]]),
                  "alpha_raw": np.array([-0.5, 0.0, -1.0]),
                  "beta_raw": np.array([1.5, -2.0, 2.0])}
        inverse = _inverse_radial
    lim, n = 9.0, 361
    g = np.linspace(-lim, lim, n)
    cell = (g[1] - g[0]) ** 2
    y = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, dim)
    z = y
    for i in reversed(range(length)):
        z = inverse({k: v[i] for k, v in params.items()}, z)

    with jax.enable_x64(True):
        jp = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
        z_fwd, log_det = fast_jit(lambda p, z: flows.apply(kind, p, z))(jp, jnp.asarray(z))
        np.testing.assert_allclose(z_fwd, y, atol=1e-8)  # the inverse is right
        log_q0 = D.gaussian_log_prob(jnp.asarray(z), jnp.asarray(mu0), jnp.asarray(lv0))
        q_l = np.asarray(jnp.exp(log_q0 - log_det))
        q_wrong_sign = np.asarray(jnp.exp(log_q0 + log_det))
        # Monte Carlo mean of z_L for z_0 ~ q_0
        S = 20_000
        z0s = D.gaussian_sample(jax.random.key(0), jnp.broadcast_to(jnp.asarray(mu0), (S, dim)),
                                jnp.broadcast_to(jnp.asarray(lv0), (S, dim)))
        zl = np.asarray(flows.apply(kind, jp, z0s)[0])

    total = q_l.sum() * cell
    # Riemann sum of a smooth, fast-decaying density on a 0.05 grid: error well below 1e-3
    assert abs(total - 1.0) < 2e-3, total
    assert abs(q_wrong_sign.sum() * cell - 1.0) > 0.05
    mean_grid = (q_l[:, None] * y).sum(0) * cell
    se = zl.std(0) / math.sqrt(S)
    # MC mean of S = 20000 pushed-forward draws: 5 standard errors, plus 1e-3 for the grid's quadrature error
    assert np.all(np.abs(mean_grid - zl.mean(0)) < 5 * se + 1e-3), (mean_grid, zl.mean(0), se)
    # the flow really moved the distribution (so the mean check has power)
    assert np.max(np.abs(zl.mean(0) - mu0)) > 10 * se.max()


def test_small_params_are_near_identity():
    """Small u, w, b give a near-identity planar layer (u_hat = O(|u| + |w|), log det = O(|w||u|)).

    Regression test: with the paper's m(a) = -1 + softplus(a), w.u_hat = m(0) = -0.31 for any small u, w,
    so each "near-identity" layer contracted z by 0.69 along w (log det -0.37 per layer) and
    u_hat ~ -0.31 w / ||w||^2 blew up as w -> 0.
    """
    params = flows.init_params(jax.random.key(0), "planar", 5, 3)
    assert params["u"].shape == (5, 3) and params["b"].shape == (5,)
    z = jax.random.normal(jax.random.key(1), (4, 3))
    z_out, log_det = flows.apply("planar", params, z)
    # |f(z) - z| <= sum_k |u_hat_k| ~ 5 * 0.01 * sqrt(3)
    assert float(jnp.max(jnp.abs(z_out - z))) < 0.2
    assert float(jnp.max(jnp.abs(log_det))) < 0.05
    # u = 0 is exactly the identity, whatever w and b
    w = jnp.asarray([[1e-4, -2e-4, 0.0]])
    ident = {"u": jnp.zeros((1, 3)), "w": w, "b": jnp.asarray([0.3])}
    z_out, log_det = flows.apply("planar", ident, z)
    np.testing.assert_allclose(z_out, z, atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)
    assert float(jnp.max(jnp.abs(flows.planar_u_hat(jnp.asarray([1e-3, 0, 0]), w[0])))) < 2e-3
    with pytest.raises(ValueError):
        flows.param_shapes("no_such_flow", 3)


def test_amortized_planar_elbo_matches_float64_numpy():
    """The whole single-sample ELBO path of an amortized planar VAE (encoder, flow head, layers in order,
    log q_L = log q_0 - sum log|det|, decoder at z_L, prior at z_L) against an independent float64 NumPy
    computation from the same parameters and noise: u_hat by the formula written out, log|det| by
    slogdet of the explicit Jacobian I + u_hat psi^T."""
    from jaxvae.vae import objectives
    from jaxvae.vae.model import VAE

    x_dim, d, length, batch = 12, 3, 3, 5
    model = VAE(x_dim=x_dim, latent_dim=d, encoder_hidden=(7,), decoder_hidden=(6,), flow="planar",
                flow_length=length)
    params = model.init(jax.random.key(0))
    # O(1) flow-head weights, so the layers are far from the identity
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: 0.7 * jax.random.normal(jax.random.key(len(str(path))), a.shape)
        if "flow_" in str(path) else a, params)
    x = (np.random.default_rng(0).uniform(size=(batch, x_dim)) > 0.5).astype(np.float32)
    key = jax.random.key(3)
    got = objectives.elbo_terms(model, params, jnp.asarray(x), key, num_samples=1, analytic_kl=False)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    e, dec = p["encoder"], p["decoder"]
    h = np.tanh(x @ e["mlp"]["hidden_0"]["kernel"] + e["mlp"]["hidden_0"]["bias"])
    out = h @ e["head"]["kernel"] + e["head"]["bias"]
    mu, logvar = out[:, :d], out[:, d:]
    head = {n: h @ e[f"flow_{n}"]["kernel"] + e[f"flow_{n}"]["bias"] for n in "uwb"}
    u, w, b = head["u"].reshape(batch, length, d), head["w"].reshape(batch, length, d), head["b"]
    eps = np.asarray(jax.random.normal(jax.random.split(key, 1)[0], (batch, d)), np.float64)
    z = mu + np.exp(0.5 * logvar) * eps
    log_q = -0.5 * np.sum(eps ** 2 + logvar + np.log(2 * np.pi), axis=-1)
    for n in range(batch):
        for k in range(length):
            uk, wk = u[n, k], w[n, k]
            wu = wk @ uk
            m = -1.0 + np.log1p(np.exp(wu + np.log(np.e - 1.0)))  # m(0) = 0, m > -1
            u_hat = uk + (m - wu) * wk / (wk @ wk)
            t = np.tanh(wk @ z[n] + b[n, k])
            jac = np.eye(d) + np.outer(u_hat, (1.0 - t ** 2) * wk)
            log_q[n] -= np.linalg.slogdet(jac)[1]
            z[n] = z[n] + u_hat * t
    hd = np.tanh(z @ dec["mlp"]["hidden_0"]["kernel"] + dec["mlp"]["hidden_0"]["bias"])
    logits = hd @ dec["out"]["kernel"] + dec["out"]["bias"]
    rec = np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)
    log_p = -0.5 * np.sum(z ** 2 + np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(got["reconstruction"], rec, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["kl"], log_q - log_p, rtol=1e-5, atol=1e-4)
