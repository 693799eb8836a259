"""The log p(x) sandwich and the diagnostics on ``jaxvae.load_run(...)`` (issue 29 item 2): ``Run.ais``,
``Run.bdmc``, ``Run.gaps`` and ``Run.weight_health`` with the run's own settings and keys give results.json's
entries exactly, ``Run.snr`` gives ``python -m jaxvae.diagnose``'s table, and a run shows itself as a table
(item 3)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import jaxvae
from jaxvae import diagnose
from jaxvae.experiment import evaluations as ev
from jaxvae.experiment.eval_driver import binarize_eval
from jaxvae.experiment.run_diagnostics import AISEstimate, BDMCInterval, InferenceGaps, WeightHealth


def _without_seconds(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not k.startswith("seconds")}


@pytest.fixture(scope="module")
def sandwich_run(resume_reference):
    """The finished quickstart run with eval.ais / eval.bdmc / eval.gaps switched on (small settings), and
    the entries its registered sandwich evaluation writes into results.json's "test"."""
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    config = run.config.copy_and_resolve_references()
    for part, opts in {"ais": dict(examples=4, num_steps=10, chains=4, batch_size=4),
                       "bdmc": dict(examples=4, num_steps=10, chains=4, init="encoder"),  # AIS's shapes: one compile
                       "gaps": dict(examples=4, max_steps=20, check_every=10, batch_size=4)}.items():
        for k, v in opts.items():
            config.eval[part][k] = v
    test, _ = ev.run_evaluations(config, run.model, run.params, run.dataset, None,
                                 evaluations=[ev.EVALUATIONS["sandwich"]])
    return dataclasses.replace(run, config=config), test


def test_ais_bdmc_and_gaps_reproduce_the_run_evaluations_entries(sandwich_run):
    run, test = sandwich_run
    a = run.ais()
    assert isinstance(a, AISEstimate) and a.log_px.shape == (4,) and a.iwae.shape == (4,)
    assert _without_seconds(a.entry) == _without_seconds(test["ais"])
    assert (a.mean, a.stderr) == (test["ais"]["log_px"], test["ais"]["log_px_stderr"])
    assert a.mean_stderr("difference")[0] == test["ais"]["ais_minus_iwae"]

    b = run.bdmc()
    assert isinstance(b, BDMCInterval) and b.lower.shape == b.upper.shape == (4,) and b.x.shape == (4, 64)
    assert _without_seconds(b.entry) == _without_seconds(test["bdmc"])
    assert (b.mean, b.stderr) == (test["bdmc"]["width"], test["bdmc"]["width_stderr"])

    # eval.ais covers the gaps' examples, so the run's evaluation took log p(x) from AIS: so does gaps()
    g = run.gaps()
    assert isinstance(g, InferenceGaps) and g.estimator == "ais_T10" and g.inference_gap.shape == (4,)
    assert _without_seconds(g.entry) == _without_seconds(test["gaps"])
    assert _without_seconds(run.gaps(log_px=a).entry) == _without_seconds(test["gaps"])
    np.testing.assert_allclose(g.approximation_gap + g.amortization_gap, g.inference_gap, atol=1e-4)
    assert g.mean_stderr("amortization_gap") == (test["gaps"]["amortization_gap"],
                                                 test["gaps"]["amortization_gap_stderr"])
    assert run.gaps(log_px="iwae").estimator == "iwae_50"  # IWAE at the largest eval.ks instead

    # other settings and examples: arguments override eval.*; the examples default to eval_examples()
    x = run.eval_examples()
    seed = ev.eval_binarize_seed(run.config)
    np.testing.assert_array_equal(x[:4], binarize_eval(run.test_data(), "dynamic", seed)[:4])
    longer = run.ais(x[:2], num_steps=20, chains=2)
    assert longer.entry["num_steps"] == 20 and longer.log_w.shape == (2, 2) and "T=20" in repr(longer)
    with pytest.raises(ValueError, match="covers 2 examples"):
        run.gaps(x[:4], log_px=longer)


def test_weight_health_reproduces_results_json_and_takes_any_k(resume_reference):
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    results = json.loads((resume_reference / "results.json").read_text())["test"]
    w = run.weight_health()
    assert isinstance(w, WeightHealth) and w.k == 50 and w.ess.shape == w.khat.shape == (100,)
    assert w.entry == {"ess": results["ess"], "pareto_k": results["pareto_k"]}
    assert (w.mean, w.frac_above_0_7) == (results["ess"]["50"]["mean"], results["pareto_k"]["frac_above_0_7"])
    assert 0 < w.ess.min() and w.ess.max() <= 1 + 1e-6
    small = run.weight_health(run.eval_examples()[:10], k=5)
    assert small.k == 5 and small.khat is None and small.entry["pareto_k"] is None  # K < 21: no k-hat
    assert "k-hat n/a" in repr(small)


def test_snr_is_the_diagnose_table(resume_reference):
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    ks, estimators = (2,), ("iwae_dreg",)
    s = run.snr(ks=ks, estimators=estimators, num_draws=4, key=3, batch=5)
    x = binarize_eval(np.asarray(run.test_data()[:5], np.float32), run.config.data.binarize, 3)  # diagnose.main's batch
    want = diagnose.diagnose(run.model, run.params, jax.numpy.asarray(x), jax.random.key(3), ks=ks,
                             estimators=estimators, num_draws=4)
    assert s.table == want["snr"] and s.batch_size == 5
    k, v = s.curve("iwae_dreg", "decoder")
    assert list(k) == [2] and np.all(v >= 0) and "iwae_dreg" in repr(s)


def test_a_run_shows_itself_as_a_table(resume_reference):
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    t = run.results()["test"]
    page = run._repr_html_()
    assert page.startswith("<table class='jaxvae-run'>") and page.endswith("</table>")
    for text in ("quickstart", "iwae, K=5", "finished", "latest checkpoint", f"{t['iwae']['50']:.3f}",
                 f"{t['elbo']:.3f}", "active units"):
        assert text in page and text in repr(run), text
    assert "latent 8" in page and "<script" not in page


def test_summary_shows_ais_bdmc_and_gaps_when_they_ran(sandwich_run, resume_reference):
    """Issue 27 item 3: with eval.ais / eval.bdmc / eval.gaps switched on, the registered sandwich evaluation
    runs after the bounds, and the printed summary carries the same numbers as results.json's entries."""
    run, test = sandwich_run
    names = [e.name for e in ev.evaluations_for(run.config, run.model)]
    assert "sandwich" in names and names.index("bounds") < names.index("sandwich")
    r = json.loads((resume_reference / "results.json").read_text())
    plain = ev.format_results(r)
    assert "AIS log p(x)" not in plain and "BDMC" not in plain and "test IWAE_50" in plain
    r["test"].update(test)
    t, text = r["test"], ev.format_results(r)
    assert f"{t['ais']['log_px']:.3f}" in text and "AIS log p(x) (4 ex., T=10)" in text
    assert f"{t['ais']['ais_minus_iwae']:.3f}" in text
    assert f"[{t['bdmc']['lower']:.3f}, {t['bdmc']['upper']:.3f}]" in text and f"{t['bdmc']['width']:.3f}" in text
    assert f"{t['gaps']['approximation_gap']:.3f}" in text and f"{t['gaps']['amortization_gap']:.3f}" in text

