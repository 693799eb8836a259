"""Diagnostics (jaxvae.vae.diagnostics): gradient SNR scaling with K (Rainforth et al. 2018) on the
linear-Gaussian model, ESS/K, the PSIS Pareto k-hat on samples of known tail shape, and the weight-health
numbers evaluate_split adds to results."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.experiment.eval_driver import evaluate_split, weight_health_lines
from jaxvae.vae import diagnostics as G
from jaxvae.vae import objectives as O
from jaxvae.vae.evaluation import iwae_bound_chunked

fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _slope(rows, group, stat="snr_debiased_mean"):
    return np.polyfit(np.log([r["k"] for r in rows]), np.log([r[group][stat] for r in rows]), 1)[0]


def test_snr_scaling_with_k_on_the_linear_gaussian_model(linear_gaussian):
    """IWAE: encoder SNR ~ K^-1/2, decoder SNR ~ K^+1/2 (Rainforth et al. 2018, Theorem 1); DReG's encoder
    SNR does not fall. R = 2000 draws: the debiased SNR at K = 256 (~0.04) carries ~10% error per point
    (1/sqrt(R) per parameter, averaged over the encoder's 24), so a log-log slope over K = 4..256 is good to
    ~0.05 (measured -0.52 / +0.52 / +0.47); tolerance 0.2."""
    lg = linear_gaussian
    x = jnp.asarray(lg.x)
    params = lg.params(mu_shift=0.4, logvar_shift=0.5)
    key = jax.random.key(0)
    rows = G.snr_vs_k(lg.model, params, x, key, (4, 16, 64, 256), ("iwae",), num_draws=2000)["iwae"]
    assert abs(_slope(rows, "encoder") + 0.5) < 0.2, rows
    assert abs(_slope(rows, "decoder") - 0.5) < 0.2, rows
    dreg = G.snr_vs_k(lg.model, params, x, key, (4, 256), ("iwae_dreg",), num_draws=2000)["iwae_dreg"]
    assert _slope(dreg, "encoder") > 0.2, dreg
    # the same draws for the decoder: DReG's theta gradient is the IWAE one
    np.testing.assert_allclose(dreg[-1]["decoder"]["snr_mean"], rows[-1]["decoder"]["snr_mean"], rtol=1e-4)
    assert rows[0]["encoder"]["num_params"] == 24 and rows[0]["decoder"]["num_params"] == 15


def test_snr_summary_known_values():
    """Two parameters, R = 4 draws: g1 = (1, 3, 1, 3) has mean 2 and sd sqrt(4/3); g2 is constant (excluded)."""
    draws = {"encoder": {"w": jnp.array([[1.0, 5.0], [3.0, 5.0], [1.0, 5.0], [3.0, 5.0]])}}
    s = G.snr_summary(draws)["encoder"]
    assert s["num_params"] == 2 and s["num_constant"] == 1
    np.testing.assert_allclose(s["snr_median"], 2 / math.sqrt(4 / 3))
    np.testing.assert_allclose(s["snr_debiased_mean"], math.sqrt(4 - (4 / 3) / 4) / math.sqrt(4 / 3))
    np.testing.assert_allclose(s["grad_var_sum"], 4 / 3)


def test_estimator_options_spend_the_budget():
    assert G.estimator_options("piwae", 64, m=8) == {"m": 8, "k": 8}
    assert G.estimator_options("miwae", 4, m=8) == {"m": 4, "k": 1}
    assert G.estimator_options("ciwae", 16, beta_ciwae=0.05) == {"k": 16, "beta_ciwae": 0.05}
    assert G.estimator_options("rws", 16) == {"k": 16}


def test_ess_is_one_for_the_exact_posterior_and_falls_for_a_poor_one(linear_gaussian):
    """With q = p(z|x) every weight equals p(x): ESS/K = 1 up to float32 rounding of the log weights
    (|log w - log p(x)| < 2e-4 gives ESS/K > 1 - 1e-6). A shifted, too-narrow q gives ESS/K well below 1,
    and lower at larger K. The chunked statistics are those of the same weights unchunked."""
    lg = linear_gaussian
    x = jnp.asarray(lg.x)
    K = 500

    @fast_jit
    def run(params, key):
        lw = O.log_weights(lg.model, params, x, jax.random.fold_in(key, 0), K)
        stats = G.iwae_weight_stats_chunked(lg.model, params, x, key, K, chunk_size=K, tail=G.psis_tail_length(K) + 1)
        chunked = G.iwae_weight_stats_chunked(lg.model, params, x, key, 2 * K, chunk_size=K // 5)
        return lw, stats, chunked, iwae_bound_chunked(lg.model, params, x, key, 2 * K, K // 5)

    lw, stats, chunked, bound = run(lg.params(), jax.random.key(1))
    np.testing.assert_allclose(G.ess_fraction(lw), 1.0, atol=1e-6)
    np.testing.assert_allclose(stats["ess"], 1.0, atol=1e-6)
    np.testing.assert_array_equal(chunked["bound"], bound)  # the same bound as evaluation's, bit for bit
    lw, stats, chunked, _ = run(lg.params(mu_shift=1.0, logvar_shift=-1.5), jax.random.key(1))
    ess = np.asarray(G.ess_fraction(lw))
    np.testing.assert_allclose(stats["ess"], ess, rtol=1e-4)
    np.testing.assert_allclose(stats["bound"], O.log_mean_exp(lw), rtol=1e-6)
    np.testing.assert_allclose(np.sort(stats["top_log_w"], 1), np.sort(lw.T, 1)[:, -stats["top_log_w"].shape[1]:],
                               rtol=1e-6)
    assert ess.max() < 0.5 and float(chunked["ess"].mean()) < ess.mean()
    # the ESS of a weight vector by hand: w = (1, 1, 0, 0) -> 4 / (4 * 2) = 0.5
    np.testing.assert_allclose(G.ess_fraction(jnp.log(jnp.array([1.0, 1.0, 1e-30, 1e-30]))), 0.5, rtol=1e-6)


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_pareto_khat_recovers_the_tail_shape(shape):
    """Weights from a generalized Pareto with shape xi: w = ((1 - U)^-xi - 1) / xi. k-hat of K = 5000 weights
    uses the M = 213 largest; its sd is ~(1 + xi) / sqrt(M) < 0.13, so the mean over 20 samples is good to
    ~0.03 (plus the PSIS prior's shrinkage towards 0.5, 10 / 223 of the way); tolerance 0.1."""
    rng = np.random.default_rng(0)
    u = rng.random((20, 5000))
    log_w = np.log(((1 - u) ** -shape - 1) / shape)
    k = G.pareto_khat(log_w, axis=1)
    assert abs(k.mean() - shape) < 0.1, k


def test_pareto_khat_flags_heavy_tails_and_passes_light_ones():
    """log w ~ N(0, 0.5^2) (light-tailed weights) gives k-hat < 0.5. A N(0, 1) proposal for a N(0, 3^2) target,
    log w = z^2 (1 - 1/9) / 2 + const, has tail shape k = 1 - 1/9 = 0.89 (Vehtari et al.), infinite
    variance: k-hat's sd at K = 5000 is ~0.1 (measured 0.66..0.98 over 10 samples), so the mean must exceed
    0.75 and most samples 0.7. Fewer than 21 weights give nan."""
    rng = np.random.default_rng(1)
    light = rng.normal(0, 0.5, (10, 5000))
    assert np.all(G.pareto_khat(light, axis=1) < 0.5)
    z = rng.normal(size=(10, 5000))
    k = G.pareto_khat(z ** 2 * (1 - 1 / 9) / 2, axis=1)
    assert k.mean() > 0.75 and np.sum(k > 0.7) >= 7, k
    assert np.isnan(G.pareto_khat(light[:, :20], axis=1)).all()


def test_evaluate_split_reports_weight_health(linear_gaussian):
    lg = linear_gaussian
    x = np.asarray(lg.x)
    good = evaluate_split(lg.model, lg.params(mu_shift=0.1), x, jax.random.key(0), ks=(1, 500), surgery=False)
    assert set(good["ess"]) == {"1", "500"} and good["pareto_k"]["k"] == 500
    assert good["ess"]["1"]["mean"] == 1.0  # one weight: ESS/K = 1 always
    assert good["ess"]["500"]["p10"] > 0.9 and good["pareto_k"]["max"] < 0.7
    bad = evaluate_split(lg.model, lg.params(mu_shift=2.0, logvar_shift=-3.0), x, jax.random.key(0),
                         ks=(1, 50), surgery=False, batch_size=3)  # padded last batch: 8 examples, masked
    assert bad["ess"]["50"]["mean"] < 0.3 and bad["ess"]["50"]["p10"] <= bad["ess"]["50"]["mean"]
    assert bad["pareto_k"]["max"] > 0.7 and bad["pareto_k"]["frac_above_0_7"] > 0
    assert any(line.startswith("warning: Pareto k-hat > 0.7") for line in weight_health_lines(bad))
    assert not any(line.startswith("warning") for line in weight_health_lines(good))
    small = evaluate_split(lg.model, lg.params(), x, jax.random.key(0), ks=(1, 5), surgery=False)
    assert small["pareto_k"] is None


def test_diagnose_command_writes_json_and_figure(resume_reference, tmp_path, capsys):
    """``python -m jaxvae.diagnose`` on a finished run (a copy of the session's reference run): SNR rows for
    every (estimator, K), MIWAE/PIWAE spending K as M x K/M, a PNG; and the run's results.json (written by this
    code) carries the weight-health numbers."""
    import json
    import shutil

    from jaxvae import diagnose

    work = tmp_path / "run"
    shutil.copytree(resume_reference, work)
    results = json.loads((work / "results.json").read_text())["test"]
    assert set(results["ess"]) == {"1", "5", "50"} and results["pareto_k"]["k"] == 50
    assert 0 < results["ess"]["50"]["p10"] <= results["ess"]["50"]["mean"] <= 1
    for checkpoint in ("init", "latest"):
        assert diagnose.main([str(work), "--ks", "1,4", "--estimators", "iwae,piwae,rws", "--draws", "3",
                              "--batch", "2", "--m", "2", "--checkpoint", checkpoint]) == 0
        out = json.loads((work / f"snr_{checkpoint}.json").read_text())
        assert [r["k"] for r in out["snr"]["piwae"]] == [1, 4]
        assert out["snr"]["piwae"][1]["options"] == {"m": 2, "k": 2}
        assert out["snr"]["iwae"][0]["encoder"]["snr_mean"] > 0
        assert (work / f"snr_{checkpoint}.png").stat().st_size > 1000
    assert diagnose.main([str(work), "--estimators", "nope"]) == 2
    assert "unknown estimators" in capsys.readouterr().err
