"""AIS, BDMC and the inference-gap decomposition on the linear-Gaussian model, whose log p(x) and posterior
are exact (tests/conftest.py). Each estimator is compiled once per test (T is a traced argument)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvae.experiment.configs import base_config
from jaxvae.experiment.validation import ConfigError, validate_config
from jaxvae.vae import ais as A
from jaxvae.vae import gaps as G
from jaxvae.vae.evaluation import linear_gaussian_log_px
from jaxvae.vae.objectives import log_mean_exp, log_weights

CHAINS = 16


def _se(v):
    v = np.asarray(v, np.float64)
    return v.std(ddof=1) / np.sqrt(len(v))


def test_ais_with_one_temperature_is_iwae_on_the_same_draws(linear_gaussian):
    lg = linear_gaussian
    params = lg.params(mu_shift=0.5, logvar_shift=1.0)
    key = jax.random.key(3)
    r = A.ais(lg.model, params, lg.x, key, num_steps=1, num_chains=CHAINS)
    iwae = log_mean_exp(log_weights(lg.model, params, jnp.asarray(lg.x), jax.random.split(key)[0], CHAINS))
    np.testing.assert_allclose(r.log_px, iwae, atol=1e-4)  # identical draws, float32 sums in another order


def test_ais_converges_to_exact_log_px_and_adapts_its_step(linear_gaussian):
    """A biased encoder (mean +0.5, variance x e) leaves IWAE_16 visibly short of log p(x); with T = 300 the
    AIS estimate matches the exact value within 3 standard errors over the 8 examples (plus 0.02 nats for
    AIS's own downward bias), and HMC's acceptance sits near its 0.65 target after adaptation."""
    lg = linear_gaussian
    params = lg.params(mu_shift=0.5, logvar_shift=1.0)
    exact = lg.log_px()
    errs = {}
    for t in (1, 300):
        r = A.ais(lg.model, params, lg.x, jax.random.key(t), num_steps=t, num_chains=CHAINS)
        assert np.all(np.isfinite(r.log_px))
        errs[t] = np.asarray(r.log_px, np.float64) - exact
    assert np.mean(np.abs(errs[300])) < 0.5 * np.mean(np.abs(errs[1]))
    assert abs(np.mean(errs[300])) < 3 * _se(errs[300]) + 0.02
    assert np.max(np.abs(errs[300])) < 0.2
    acc = np.asarray(r.acceptance)
    assert np.all((acc > 0.5) & (acc < 0.8)), acc  # band around target_accept = 0.65

    # Extreme posterior: decoder weights x 100 (posterior sd ~ 5e-3, log p(x) ~ -1e4 for these x) with the
    # broad encoder: no NaN, the step size shrinks by orders of magnitude, and AIS stays a lower bound.
    wide = dict(params, decoder={"out": {"kernel": params["decoder"]["out"]["kernel"] * 100.0,
                                         "bias": params["decoder"]["out"]["bias"]}})
    r = A.ais(lg.model, wide, lg.x, jax.random.key(7), num_steps=300, num_chains=CHAINS)
    exact_wide = np.asarray(linear_gaussian_log_px(lg.model, wide, jnp.asarray(lg.x)))
    assert np.all(np.isfinite(r.log_px)) and np.all(np.isfinite(r.log_w))
    assert np.all(np.asarray(r.step_size) < 0.05)
    # A lower bound in expectation (E[p_hat] = p(x)): one example's estimate can overshoot by 1-2.6 nats here
    # (keys 7-14 on jax 0.10 and 0.11, whose HMC trajectories differ by float32 rounding), the mean does not
    # (-1 to -3.3 nats over those keys).
    excess = np.asarray(r.log_px, np.float64) - exact_wide
    assert np.mean(excess) <= 0.0 and np.all(excess <= 3.0), excess


def test_bdmc_sandwiches_exact_log_px_and_narrows_with_t(linear_gaussian):
    """On 16 examples simulated from the model, forward AIS from the prior is below and reverse AIS above
    the exact log p(x) (mean over examples, within 3 standard errors), and the sandwich narrows with T."""
    lg = linear_gaussian
    params = lg.params()
    z, x = A.simulate(lg.model, params, jax.random.key(0), 16)
    exact = np.asarray(linear_gaussian_log_px(lg.model, params, x), np.float64)
    opts = dict(num_chains=4, init="prior")
    widths = {}
    for t in (5, 200):
        lo = np.asarray(A.ais(lg.model, params, x, jax.random.key(t), num_steps=t, **opts).log_px, np.float64)
        up = np.asarray(A.reverse_ais(lg.model, params, x, z, jax.random.key(t + 1), num_steps=t, **opts).log_px,
                        np.float64)
        assert np.mean(exact - lo) > -3 * _se(exact - lo)
        assert np.mean(up - exact) > -3 * _se(up - exact)
        widths[t] = np.mean(up - lo)
    assert widths[200] < 0.5 * widths[5]
    assert widths[200] < 0.1


def test_gap_decomposition_of_the_linear_gaussian_model(linear_gaussian):
    """W has orthogonal columns, so the exact posterior is a diagonal Gaussian: q* reaches it (approximation
    gap 0) and the amortization gap of an encoder off by (mean +0.5, variance x e) is its analytic ELBO
    deficit KL(q_phi || p(z|x)) = 1.69 nats. ELBO[q_phi] is estimated with 4000 draws whose log-weights have
    sd ~ 1.8 here, a standard error of ~0.03 per example and ~0.01 for the mean over the 8 examples."""
    lg = linear_gaussian
    exact = lg.log_px()
    truth, biased = lg.params(), lg.params(mu_shift=0.5, logvar_shift=1.0)
    post, bpost = lg.model.encode(truth, lg.x), lg.model.encode(biased, lg.x)
    kl = 0.5 * np.sum(np.exp(bpost.logvar - post.logvar) + (bpost.mu - post.mu) ** 2 / np.exp(post.logvar)
                      - 1.0 - (bpost.logvar - post.logvar), axis=-1)
    opts = dict(eval_samples=4000, max_steps=3000, check_every=100, tol=1e-3)
    g = G.inference_gaps(lg.model, biased, jnp.asarray(lg.x), jnp.asarray(exact, jnp.float32), jax.random.key(0),
                         **opts)
    assert bool(g["converged"])
    np.testing.assert_allclose(g["approximation_gap"], 0.0, atol=0.03)
    assert np.all(np.asarray(g["amortization_gap"]) > 1.0)
    assert abs(float(np.mean(g["amortization_gap"])) - float(np.mean(kl))) < 0.05
    np.testing.assert_allclose(g["amortization_gap"], kl, atol=0.15)  # 5 standard errors per example
    g = G.inference_gaps(lg.model, truth, jnp.asarray(lg.x), jnp.asarray(exact, jnp.float32), jax.random.key(1),
                         **opts)  # the exact encoder: both gaps vanish (zero-variance weights)
    np.testing.assert_allclose(g["amortization_gap"], 0.0, atol=0.03)
    np.testing.assert_allclose(g["approximation_gap"], 0.0, atol=0.03)


def test_ais_and_gaps_run_on_a_flow_posterior(linear_gaussian):
    """A planar-flow posterior: AIS runs in the base space (T = 1 is IWAE on the same draws; T = 100 is at
    least as tight as IWAE_16 within noise) and q* improves on the encoder."""
    lg = linear_gaussian
    model = dataclasses.replace(lg.model, flow="planar", flow_length=2)
    params = model.init(jax.random.key(0))
    params = dict(params, decoder=lg.params()["decoder"])
    key = jax.random.key(5)
    r1 = A.ais(model, params, lg.x, key, num_steps=1, num_chains=CHAINS)
    iwae = log_mean_exp(log_weights(model, params, jnp.asarray(lg.x), jax.random.split(key)[0], CHAINS))
    np.testing.assert_allclose(r1.log_px, iwae, atol=1e-4)
    r = A.ais(model, params, lg.x, key, num_steps=100, num_chains=CHAINS)
    exact = lg.log_px()
    assert np.mean(np.abs(np.asarray(r.log_px) - exact)) < 0.5 * np.mean(np.abs(np.asarray(r1.log_px) - exact))
    g = G.inference_gaps(model, params, jnp.asarray(lg.x), jnp.asarray(exact, jnp.float32), jax.random.key(2),
                         eval_samples=500, max_steps=500)
    assert np.all(np.isfinite(g["elbo_optimal"])) and float(np.mean(g["amortization_gap"])) > 0.1


@pytest.mark.parametrize("override, message", [
    ({"eval.ais.init": "posterior"}, "eval.ais.init='posterior' is not one of encoder, prior"),
    ({"eval.ais.target_accept": 1.0}, "eval.ais.target_accept=1.0 must be < 1"),
    ({"eval.bdmc.examples": 10, "eval.bdmc.init": "encoder", "model.flow": "planar", "model.flow_length": 2},
     "eval.bdmc.init='encoder' needs a Gaussian posterior"),
])
def test_bad_sandwich_config_is_one_clear_line(override, message):
    c = base_config()
    for field, value in override.items():
        node = c
        *path, leaf = field.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate_config(c)
    assert isinstance(c.eval.ais, ml_collections.ConfigDict) and base_config().eval.ais.examples == 0


def test_report_plots_the_sandwich_and_the_gaps(tmp_path):
    """Runs whose results.json has test.ais / test.bdmc / test.gaps get the sandwich plot, the stacked gap
    bar and the table columns; runs without them get neither."""
    from test_report import PNG_MAGIC, _results, _write_run

    from jaxvae.sweeps import report

    iw = {"1": -114.2, "5": -111.5, "50": -110.0, "5000": -108.9}
    r = _results("elbo", 1, 0, -114.2, iw, 108.9)
    r["test"]["ais"] = {"examples": 100, "num_steps": 100, "chains": 4, "leapfrog_steps": 10, "init": "encoder",
                        "log_px": -108.5, "log_px_stderr": 0.1, "iwae_k": 5000, "iwae": -108.8}
    r["test"]["bdmc"] = {"examples": 20, "num_steps": 100, "chains": 4, "init": "prior", "lower": -101.0,
                         "upper": -99.5, "width": 1.5, "iwae_k": 5000, "iwae": -101.2}
    r["test"]["gaps"] = {"examples": 100, "log_px_estimator": "ais_T100", "approximation_gap": 1.2,
                         "amortization_gap": 3.4, "approximation_gap_stderr": 0.1, "amortization_gap_stderr": 0.2}
    _write_run(tmp_path / "with", "vae", r)
    md = report.write_report(str(tmp_path / "with"), verbose=False)
    for name in ("report_sandwich.png", "report_gaps.png"):
        assert (tmp_path / "with" / name).read_bytes()[:8] == PNG_MAGIC
    assert "AIS log p(x)" in md and "BDMC width" in md and "amort. gap" in md and "| 3.40 |" in md
    _write_run(tmp_path / "without", "vae", _results("elbo", 1, 0, -114.2, iw, 108.9))
    md = report.write_report(str(tmp_path / "without"), verbose=False)
    assert not (tmp_path / "without" / "report_sandwich.png").exists() and "AIS log p(x)" not in md
