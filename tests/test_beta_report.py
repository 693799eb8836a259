"""The beta-sweep part of the report (jaxvae.sweeps.report.beta) on constructed run folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxvae.sweeps.report import beta as B
from jaxvae.sweeps import report as R

BETAS = (0.5, 1.0, 4.0)


def _run(root, beta, dim, seed, rate, dist, mig=0.5, traversal=True):
    d = root / f"beta={beta},latent_dim={dim},seed={seed}"
    d.mkdir(parents=True)
    results = {
        "status": "finished", "name": "claims",
        "config": {"seed": seed, "name": "claims", "objective": {"beta": beta, "name": "elbo"},
                   "model": {"latent_dim": dim}},
        "summary": {"beta": beta, "seed": seed, "latent_dim": dim, "objective": "elbo", "k": 1},
        "test": {"elbo": -(rate + dist), "rate": rate, "distortion": dist, "kl": rate, "reconstruction": -dist,
                 "mutual_information": 0.8 * rate, "marginal_kl": 0.2 * rate, "active_units": dim,
                 "iwae": {"1": -(rate + dist)}, "sample_manifold_rmse": 0.01 * beta,
                 "disentanglement": {"mig": mig, "mig_per_factor": {"brightness": mig + 0.1, "contrast": mig - 0.1},
                                     "mig_latent": {"brightness": 1, "contrast": 0},
                                     "dci_disentanglement": 0.7, "dci_completeness": 0.6,
                                     "dci_informativeness": 0.9}},
    }
    (d / "results.json").write_text(json.dumps(results))
    if traversal:
        import matplotlib.image as mpimg
        mpimg.imsave(d / "traversals.png", np.random.default_rng(seed).random((16, 40)), cmap="gray")
    return d


@pytest.fixture
def sweep(tmp_path):
    """Two series (latent_dim 2 and 10) x 3 betas x 2 seeds; rate falls and distortion rises with beta."""
    root = tmp_path / "sweep"
    for dim in (2, 10):
        for beta in BETAS:
            for seed in (0, 1):
                rate = 10.0 / beta + seed  # seeds differ by 1 nat of rate ...
                dist = 20.0 + 3.0 * beta - 2.0 * seed  # ... and 2 nats of distortion
                _run(root, beta, dim, seed, rate, dist, mig=0.1 * beta)
    return root


def test_rate_distortion_points_means_stds_and_optimum(sweep):
    runs = [r for r in R.load_runs(str(sweep)) if r.finished]
    points = B.rate_distortion_points(runs)
    assert len(points) == 6 and {p["n"] for p in points} == {2}
    p = next(p for p in points if p["beta"] == 4.0)
    assert p["rate"] == pytest.approx(2.5 + 0.5) and p["distortion"] == pytest.approx(32.0 - 1.0)
    assert p["rate_std"] == pytest.approx(math.sqrt(0.5)) and p["distortion_std"] == pytest.approx(math.sqrt(2.0))
    assert p["neg_elbo"] == pytest.approx(p["rate"] + p["distortion"])
    # R + D = 10 / beta + 3 beta + 19.5: 39.5 (beta 0.5), 32.5 (1), 34.5 (4) -> beta = 1 is ELBO-optimal
    best = [q for q in points if q["optimal"]]
    assert len(best) == 2 and all(q["beta"] == 1.0 for q in best)


def test_report_draws_beta_plots_and_columns(sweep):
    text = R.write_report(str(sweep), verbose=False)
    for name in ("report_rate_distortion.png", "report_disentanglement.png", "report_traversals.png"):
        assert (sweep / name).stat().st_size > 5000, name
        assert f"({name})" in text
    header = text.split("## Runs", 1)[1].splitlines()[2]
    for col in ("rate R", "distortion D", "MIG", "DCI D"):
        assert f" {col} |" in header
    row = next(line for line in text.splitlines() if line.startswith("| beta=4.0,latent_dim=2,seed=1 |"))
    assert "| 3.50 | 30.00 |" in row  # rate 2.5 + 1, distortion 32 - 2
    table = B.alignment_table([r for r in R.load_runs(str(sweep)) if r.finished])
    assert "| beta=4.0,latent_dim=10,seed=0 | 4 | 10 | 0 | 10 | z1 (0.50) | z0 (0.30) | 0.400 |" in table


def test_no_beta_plots_without_a_beta_sweep(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, 1.0, 2, seed, 5.0, 20.0)
    text = R.write_report(str(tmp_path), verbose=False)
    assert not (tmp_path / "report_rate_distortion.png").exists()
    assert not (tmp_path / "report_traversals.png").exists()
    assert "rate R" in text  # the columns still show


def test_older_results_without_rate_keep_their_columns(tmp_path):
    d = _run(tmp_path, 1.0, 2, 0, 5.0, 20.0)
    r = json.loads((d / "results.json").read_text())
    for k in ("rate", "distortion", "disentanglement"):
        del r["test"][k]
    (d / "results.json").write_text(json.dumps(r))
    text = R.write_report(str(tmp_path), verbose=False, plots=False)
    assert "rate R" not in text and "MIG" not in text


def test_alignment_summary_counts_separate_latents(sweep):
    runs = [r for r in R.load_runs(str(sweep)) if r.finished]
    text = B.alignment_summary(runs, threshold=0.35)
    # brightness on z1, contrast on z0 in every run; per-factor MIGs 0.1 beta + 0.1 and 0.1 beta - 0.1:
    # at beta = 4 they are 0.5 and 0.3, so both exceed 0.25 (2 of 2 seeds) but not 0.35 (0 of 2)
    assert "| 2 | 4 | 0/2 | 0.50 ± 0.00 | 0.30 ± 0.00 |" in text
    assert "| 10 | 0.5 | 0/2 | 0.15 ± 0.00 | -0.05 ± 0.00 |" in text
    text = B.alignment_summary(runs, threshold=0.25)
    assert text.count("| 2/2 |") == 2 and "| 10 | 4 | 2/2 |" in text and "| 2 | 4 | 2/2 |" in text


def test_cli_alignment_prints_the_tables_and_writes_nothing(sweep, capsys):
    assert R.main([str(sweep), "--alignment"]) == 0
    out = capsys.readouterr().out
    assert "| beta=4.0,latent_dim=10,seed=0 | 4 | 10 | 0 | 10 | z1 (0.50) | z0 (0.30) | 0.400 |" in out
    assert "| separate latents, both MIG > 0.3 |" in out and not (sweep / "report.md").exists()
