"""The report's "Objectives compared" table (issue 28; Rainforth et al. 2018's layout): runs that differ only
in the objective, one row per objective with mean ± std over seeds of log p(x) (= IWAE_Kmax), the ELBO,
IWAE at the training budget, the KL gap log p(x) - ELBO taken per seed, the gradient SNR from
``python -m jaxvae.diagnose``'s JSON, and a published value of another binarization set beside it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from jaxvae.sweeps import report
from jaxvae.sweeps.report import objectives
from jaxvae.sweeps.report.loading import load_runs

OBJ = {  # name: (objective.name, m, k)
    "iwae_64": ("iwae", 1, 64), "miwae_8x8": ("miwae", 8, 8), "vae_64": ("elbo", 1, 64)}


def _results(name, seed, elbo, log_px, iwae_64, lr=1e-3):
    obj, m, k = OBJ[name]
    return {
        "name": name, "status": "finished",
        "config": {"name": name, "seed": seed, "objective": {"name": obj, "m": m, "k": k, "beta_ciwae": 0.5},
                   "data": {"name": "binarized_mnist", "binarize": "none"}, "train": {"learning_rate": lr}},
        "summary": {"dataset": "binarized_mnist", "objective": obj, "k": k, "seed": seed},
        "test": {"elbo": elbo, "iwae": {"1": elbo, "64": iwae_64, "5000": log_px}, "nll": -log_px,
                 "num_examples": 10000},
        "train": {"steps": 82000, "epochs": 32.8, "wall_time_s": 7200.0 + seed * 360},
    }


def _write(root: Path, name: str, results: dict, snr=None) -> None:
    wd = root / f"{name},seed={results['config']['seed']}"
    wd.mkdir(parents=True)
    (wd / "results.json").write_text(json.dumps(results))
    (wd / "status.json").write_text(json.dumps({"status": "finished"}))
    if snr is not None:
        (wd / "snr_best.json").write_text(json.dumps({"ks": [1, 64], "snr": snr}))


def _snr(estimator, enc, dec):
    return {estimator: [{"k": 1, "encoder": {"snr_debiased_mean": 9.0}, "decoder": {"snr_debiased_mean": 9.0}},
                        {"k": 64, "encoder": {"snr_debiased_mean": enc}, "decoder": {"snr_debiased_mean": dec}}]}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "rainforth"
    _write(root, "iwae_64", _results("iwae_64", 0, -90.0, -86.0, -86.5), _snr("iwae", 0.02, 3.0))
    _write(root, "iwae_64", _results("iwae_64", 1, -91.0, -86.5, -87.0), _snr("iwae", 0.04, 5.0))
    _write(root, "miwae_8x8", _results("miwae_8x8", 0, -89.0, -86.8, -87.2))
    _write(root, "miwae_8x8", _results("miwae_8x8", 1, -89.4, -87.0, -87.4), _snr("miwae", 0.3, 2.0))
    _write(root, "vae_64", _results("vae_64", 0, -88.5, -87.5, -87.9))
    return root


def test_one_row_per_objective_with_per_seed_gaps_snr_and_the_published_anchor(sweep):
    table, rows, note = objectives.objectives_table(load_runs(str(sweep)))
    by = {r["objective"]: r for r in rows}
    assert set(by) == {"IWAE(64)", "MIWAE(8, 8)", "VAE (64 samples)"}
    iw = by["IWAE(64)"]
    assert iw["seeds"] == 2
    assert iw["log p(x)"] == pytest.approx(-86.25)
    assert iw["test ELBO"] == pytest.approx(-90.5)
    assert iw["IWAE (training K)"] == pytest.approx(-86.75)
    assert iw["KL gap log p(x) - ELBO"] == pytest.approx((4.0 + 4.5) / 2)  # per seed, then averaged
    assert iw["SNR encoder"] == pytest.approx(0.03) and iw["SNR decoder"] == pytest.approx(4.0)  # K=64, not K=1
    assert iw["wall time (h)"] == pytest.approx(2.05)
    text = {r[0]: r for r in table.rows}
    assert text["IWAE(64)"][2] == "-86.25 ± 0.35"  # sample std of (-86, -86.5)
    assert text["IWAE(64)"][5] == f"4.25 ± {math.sqrt(0.125):.2f}"
    assert text["MIWAE(8, 8)"][6] == "0.3 (n=1)"  # only one seed has been diagnosed
    assert text["VAE (64 samples)"][6] == "" and text["VAE (64 samples)"][1] == "1"
    # Rainforth et al.'s MIWAE(8, 8) is on dynamic MNIST: set beside ours as an anchor, never matched as ours
    assert by["MIWAE(8, 8)"]["published_nll"] == "84.97 (Rainforth 2018)"
    assert by["IWAE(64)"]["published_nll"] == ""
    assert "IWAE_5000" in note and "another binarization" in note


def test_the_report_writes_the_section_and_its_csv(sweep):
    md = report.write_report(str(sweep), plots=False, verbose=False)
    assert "## Objectives compared" in md and "| MIWAE(8, 8) | 2 |" in md
    with open(sweep / "report_objectives.csv") as f:
        assert [r["objective"] for r in csv.DictReader(f)] == ["IWAE(64)", "MIWAE(8, 8)", "VAE (64 samples)"]
    assert "<h2>Objectives compared</h2>" in (sweep / "report.html").read_text()


def test_no_section_when_runs_differ_in_more_than_the_objective(sweep):
    _write(sweep, "vae_64", _results("vae_64", 1, -88.0, -87.0, -87.5, lr=3e-4))
    assert objectives.objectives_table(load_runs(str(sweep))) is None
    md = report.write_report(str(sweep), plots=False, verbose=False)
    assert "Objectives compared" not in md and not (sweep / "report_objectives.csv").exists()


def test_labels():
    assert objectives.objective_label({"objective": {"name": "piwae", "m": 8, "k": 8}}) == "PIWAE(8, 8)"
    assert objectives.objective_label({"objective": {"name": "ciwae", "k": 64, "beta_ciwae": 0.5}}) == \
        "CIWAE(0.5), K=64"
    assert objectives.objective_label({"objective": {"name": "iwae_dreg", "k": 64}}) == "IWAE-DReG(64)"
    assert objectives.objective_label({"objective": {"name": "elbo", "k": 1}}) == "VAE"


# -- posteriors and priors (issue 28 item 2) -------------------------------------------------------------
def _flow_run(root: Path, flow, length, seed, log_px, elbo, rates, variant=None, batch=100):
    config = {"seed": seed, "model": {"flow": flow, "flow_length": length, "prior": "standard_normal",
                                      "flow_options": {"variant": variant or "orthogonal", "head_scale": 0.1}},
              "train": {"batch_size": batch}, "objective": {"name": "elbo", "k": 1}}
    wd = root / f"{flow}{length}{variant or ''},seed={seed}"
    wd.mkdir(parents=True)
    (wd / "results.json").write_text(json.dumps({
        "status": "finished", "config": config, "curves": "metrics.jsonl",
        "test": {"elbo": elbo, "iwae": {"1": elbo, "5000": log_px}, "num_examples": 2000},
        "train": {"epochs": 30.0}}))
    (wd / "status.json").write_text(json.dumps({"status": "finished"}))
    lines = [{"step": 100 * (i + 1), "split": "train", "examples_per_s": r} for i, r in enumerate(rates)]
    lines.append({"step": 999, "split": "valid", "iwae_50": -100.0})
    (wd / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_posteriors_table_nll_step_cost_by_the_median_and_what_the_cost_bought(tmp_path):
    from jaxvae.sweeps.report import posteriors

    root = tmp_path / "flows"
    _flow_run(root, "none", 0, 0, -100.0, -108.0, [20000, 20000, 2000])  # a paused interval: the median ignores it
    _flow_run(root, "none", 0, 1, -101.0, -109.0, [20000, 20000, 20000])
    _flow_run(root, "planar", 8, 0, -99.0, -107.0, [10000, 10000, 10000])
    _flow_run(root, "sylvester", 4, 0, -98.5, -106.0, [2000, 2000, 2000], variant="triangular")
    table, rows, note = posteriors.posteriors_table(load_runs(str(root)))
    by = {r["setting"]: r for r in rows}
    assert list(by) == ["gaussian", "planar L=8", "sylvester (triangular) L=4"]  # folder names sort this way
    assert by["gaussian"]["NLL"] == pytest.approx(100.5) and by["gaussian"]["ms per step"] == pytest.approx(5.0)
    assert by["planar L=8"]["relative step cost"] == pytest.approx(2.0)
    assert by["planar L=8"]["NLL gained per extra cost"] == pytest.approx(1.5)  # (100.5 - 99) / (2 - 1)
    assert by["sylvester (triangular) L=4"]["relative step cost"] == pytest.approx(10.0)
    assert by["sylvester (triangular) L=4"]["NLL gained per extra cost"] == pytest.approx(2.0 / 9)
    assert table.rows[0][4] == "5.00" and table.rows[0][7] == "30.0" and table.rows[0][8] == "2000" and table.rows[1][5] == "2.00x" and table.rows[0][6] == ""
    md = report.write_report(str(root), plots=False, verbose=False)
    assert "## Posteriors and priors compared" in md and (root / "report_posteriors.csv").exists()
    assert "Objectives compared" not in md


def test_posteriors_labels_for_priors():
    from jaxvae.sweeps.report.posteriors import setting_label

    assert setting_label({"model": {"flow": "none", "prior": "vampprior",
                                    "prior_options": {"components": 500}}}) == "gaussian, vampprior K=500"
    assert setting_label({"model": {"flow": "none", "prior": "standard_normal"}}, name_the_prior=True) == \
        "gaussian, N(0, I) prior"
    assert setting_label({"model": {"flow": "iaf", "flow_length": 4}}) == "iaf L=4"


def test_cell_drops_a_spread_that_rounds_to_zero_and_keeps_a_small_real_one():
    """A vectorized group's members time themselves: 2606.63 s and 2606.69 s are one wall time (0.72 h),
    not '0.72 ± 0.00'; a spread that shows at the printed digits stays."""
    assert objectives.cell([2606.63 / 3600, 2606.69 / 3600])[0] == "0.72"
    assert objectives.cell([32.8, 32.8], 1)[0] == "32.8"
    assert objectives.cell([-95.83, -95.66])[0] == "-95.75 ± 0.12"
    assert objectives.cell([1.0, 1.004])[0] == "1.00"
    assert objectives.cell([1.0, 1.01])[0] == "1.00 ± 0.01"


def test_snr_against_k_has_a_row_per_objective_and_estimator_with_the_seeds_pooled(tmp_path):
    """Every estimator diagnose ran on a trained model, at every K it ran, as mean ± std over the seeds;
    a seed that lacks an estimator is marked (n=..) in that row, and undiagnosed objectives have no row."""
    root = tmp_path / "rainforth"
    both = lambda enc, dec: {**_snr("iwae", enc, dec), **_snr("iwae_dreg", 2 * enc, dec)}  # noqa: E731
    _write(root, "iwae_64", _results("iwae_64", 0, -90.0, -86.0, -86.5), both(0.02, 3.0))
    _write(root, "iwae_64", _results("iwae_64", 1, -91.0, -86.5, -87.0), _snr("iwae", 0.04, 5.0))
    _write(root, "vae_64", _results("vae_64", 0, -88.5, -87.5, -87.9))
    table, rows, _ = objectives.snr_vs_k_table(load_runs(str(root)))
    assert table.headers == ["objective", "estimator", "seeds", "encoder K=1", "encoder K=64", "decoder K=1",
                             "decoder K=64"]
    assert [(r["objective"], r["estimator"], r["seeds"]) for r in rows] == [
        ("IWAE(64)", "iwae", 2), ("IWAE(64)", "iwae_dreg", 2)]
    iw, dreg = rows
    assert iw["encoder K=64"] == pytest.approx(0.03) and iw["decoder K=64"] == pytest.approx(4.0)
    assert iw["encoder K=1"] == pytest.approx(9.0)
    assert dreg["encoder K=64"] == pytest.approx(0.04)
    assert table.rows[0][6] == f"4 ± {math.sqrt(2):.2g}" and table.rows[1][1] == "IWAE-DReG"
    assert table.rows[0][3] == "9"  # the seeds agree: no "± 0"
    assert table.rows[1][4] == "0.04 (n=1)"  # one seed of two was diagnosed with DReG
    md = report.write_report(str(root), plots=False)
    assert "## Gradient SNR against K" in md and (root / "report_snr.csv").exists()


def test_no_snr_table_before_diagnose(tmp_path):
    root = tmp_path / "rainforth"
    _write(root, "iwae_64", _results("iwae_64", 0, -90.0, -86.0, -86.5))
    _write(root, "vae_64", _results("vae_64", 0, -88.5, -87.5, -87.9))
    assert objectives.snr_vs_k_table(load_runs(str(root))) is None
    assert "Gradient SNR against K" not in report.write_report(str(root), plots=False)


def test_issue28_ais_summary_pools_seeds_and_pairs_images(tmp_path):
    """benchmarks/issue28_ais.py: per objective, the mean over seeds of each seed's mean IWAE, AIS and paired
    difference, with the largest per-seed standard error of that difference; a folder without a finished
    run is a one-line error."""
    from jaxvae.sweeps.plan import load_module

    script = load_module(str(Path(__file__).parents[1] / "benchmarks" / "issue28_ais.py"))
    records = [{"objective": "a", "ais": [1.0, 3.0], "iwae": [0.0, 1.0], "acceptance": 0.5},   # diff 1, 2
               {"objective": "a", "ais": [2.0, 2.0], "iwae": [1.0, 1.0], "acceptance": 0.7},   # diff 1, 1
               {"objective": "b", "ais": [-1.0, -1.0, -1.0], "iwae": [-2.0, -1.0, -3.0], "acceptance": 0.6}]
    # a: IWAE (0.5 + 1) / 2, AIS (2 + 2) / 2, diff (1.5 + 1) / 2 ± std([1, 2]) / sqrt(2) = 0.5
    # b: diff (1, 0, 2): mean 1, standard error 1 / sqrt(3)
    assert script.summary_rows(records) == [
        "| a | 2 | 0.75 | 2.00 | +1.25 ± 0.50 (+1.50, +1.00) | 0.60 |",
        "| b | 1 | -2.00 | -1.00 | +1.00 ± 0.58 (+1.00) | 0.60 |"]
    assert script.main([str(tmp_path)]) == 2
