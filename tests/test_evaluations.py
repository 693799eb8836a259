"""Registered evaluations (issue 27 item 3): a custom evaluation registered in a few lines runs for runs and
for load_run().evaluate(), and the PSIS warning says what it means for the NLL column and points to AIS. (The
sandwich's numbers in the printed summary: tests/test_run_api.py, which computes them once for both.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxvae
from jaxvae.experiment import evaluations as ev
from jaxvae.experiment.eval_driver import weight_health_lines


class _MeanPixel(ev.Evaluation):
    name = "mean_pixel_test_only"

    def run(self, ctx):
        return {"mean_pixel": float(np.mean(ctx.x))}

    def summary_lines(self, results):
        return [("test mean pixel", results["test"]["mean_pixel"])]


def test_a_custom_evaluation_runs_for_load_run_and_prints(resume_reference, monkeypatch):
    monkeypatch.setitem(ev.EVALUATIONS, _MeanPixel.name, _MeanPixel())
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    out = run.evaluate(names=["bounds", _MeanPixel.name])
    assert out["mean_pixel"] == pytest.approx(float(np.mean(run.test_data())), rel=1e-6)
    assert set(out) >= {"elbo", "iwae", "mean_pixel"} and "rate" not in out  # only the named ones
    results = json.loads((resume_reference / "results.json").read_text())
    results["test"]["mean_pixel"] = out["mean_pixel"]
    assert "test mean pixel" in ev.format_results(results)
    with pytest.raises(ValueError, match="unknown evaluations \\['nope'\\]"):
        run.evaluate(names=["nope"])
    with pytest.raises(ValueError, match="already registered"):
        ev.register_evaluation(_MeanPixel())


def test_psis_warning_explains_the_nll_column_and_points_to_ais():
    heavy = {"nll_k": 5000, "ess": {"5000": {"mean": 0.01, "p10": 0.002}},
             "pareto_k": {"k": 5000, "mean": 0.9, "max": 1.4, "frac_above_0_7": 0.98}}
    (warning,) = [line for line in weight_health_lines(heavy) if line.startswith("warning")]
    assert "98.0%" in warning and "NLL column (-IWAE_5000) is still an upper bound" in warning
    assert "--config.eval.ais.examples=100" in warning
    with_ais = dict(heavy, ais={"examples": 100, "iwae_k": 5000, "ais_minus_iwae": 0.83})
    (warning,) = [line for line in weight_health_lines(with_ais) if line.startswith("warning")]
    assert "AIS on 100 test examples puts log p(x) 0.83 nats above IWAE_5000" in warning
    calm = dict(heavy, pareto_k={"k": 5000, "mean": 0.3, "max": 0.75, "frac_above_0_7": 0.02})
    assert not any(line.startswith("warning") for line in weight_health_lines(calm))
