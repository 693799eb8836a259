"""The sweep report: tables (markdown, CSV) with the right numbers, mean ± std over seeds, unfinished and
failed runs listed, PNG plots and a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvae.sweeps import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results(objective, k, seed, elbo, iwae, nll, *, flow="none", flow_length=0, exact=None, lr=1e-3,
             au=6, mi=3.1, mkl=4.0, wall=51.2, nll_k=5000):
    return {
        "name": "t", "workdir": "x", "status": "finished",
        "config": {"seed": seed, "objective": {"name": objective, "k": k, "beta": 1.0},
                   "model": {"flow": flow, "flow_length": flow_length, "latent_dim": 8,
                             "encoder_hidden": [200, 200]},
                   "train": {"learning_rate": lr}, "data": {"name": "digits"}},
        "summary": {"dataset": "digits", "objective": objective, "k": k, "flow": flow,
                    "flow_length": flow_length, "beta": 1.0, "seed": seed, "latent_dim": 8},
        "test": {"elbo": elbo, "reconstruction": elbo + 7, "kl": 7.0, "iwae": iwae, "nll": nll, "nll_k": nll_k,
                 "active_units": au, "mutual_information": mi, "marginal_kl": mkl, "mean_kl": 7.0,
                 "exact_log_px": exact, "num_examples": 200},
        "valid": {"iwae": {"50": elbo + 1}},
        "train": {"steps": 4200, "epochs": 150, "wall_time_s": wall, "examples_per_s": 4100.0},
        "eval_wall_time_s": 3.2, "curves": "metrics.jsonl",
    }


def _write_run(root: Path, name: str, results=None, status=None, launch=None, curves=True, log=True):
    wd = root / name
    wd.mkdir(parents=True)
    if results is not None:
        (wd / "results.json").write_text(json.dumps(results))
        (wd / "checkpoints" / "4200").mkdir(parents=True)  # not a run
        (wd / "checkpoints" / "4200" / "status.json").write_text("{}")
        if curves:
            key = "iwae" if results["summary"]["objective"] == "iwae" else "elbo"
            lines = [{"step": s, "epoch": s / 50, "split": "train", "loss": 30.0, key: results["test"]["elbo"] - 100 / s,
                      "examples_per_s": 5000.0} for s in (100, 200, 300, 400, 500, 600)]
            lines.append({"step": 600, "epoch": 12.0, "split": "valid", "iwae_50": results["test"]["elbo"] + 0.5})
            (wd / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    if status is not None:
        (wd / "status.json").write_text(json.dumps(status))
    if launch is not None:
        (wd / "launch.json").write_text(json.dumps(launch))
    if log:
        (wd / "log.txt").write_text("log\n")
    return wd


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "quickstart"
    fin = {"status": "finished", "step": 4200, "message": ""}
    _write_run(root, "k=1,name=elbo,seed=0",
               _results("elbo", 1, 0, -27.1, {"1": -27.2, "5": -26.0, "50": -25.5, "5000": -25.3}, 25.3), fin)
    _write_run(root, "k=1,name=elbo,seed=1",
               _results("elbo", 1, 1, -27.3, {"1": -27.4, "5": -26.2, "50": -25.7, "5000": -25.5}, 25.5,
                        au=7, wall=60.0), fin)
    _write_run(root, "k=5,name=iwae,seed=0",
               _results("iwae", 5, 0, -28.0, {"1": -28.1, "5": -25.9, "50": -25.2, "5000": -25.0}, 25.0,
                        mi=None, mkl=None), fin)  # missing numbers -> blank cells
    # a flow run (only IWAE_5 and IWAE_5000 evaluated: the IWAE columns are the union over runs)
    _write_run(root, "flow_length=4,k=5,name=iwae,seed=0",
               _results("iwae", 5, 0, -27.5, {"5": -25.6, "5000": -24.8}, 24.8, flow="planar", flow_length=4))
    # unfinished / failed / preempted / never started
    _write_run(root, "k=50,name=iwae,seed=0", status={"status": "running", "step": 1200, "message": "epoch 20"})
    _write_run(root, "k=50,name=iwae,seed=1", status={"status": "preempted", "step": 800, "message": "SIGTERM"},
               launch={"end": "t", "exit_code": 3})
    _write_run(root, "k=13,name=iwae,seed=0", status={"status": "failed", "step": 3, "message": "NaN loss"},
               launch={"end": "t", "exit_code": 1})
    _write_run(root, "crashed", status={"status": "running", "step": 5, "message": ""},
               launch={"end": "t", "exit_code": -9})
    (root / "sweep.json").write_text(json.dumps({"runs": [{"name": "k=500,name=iwae,seed=0"},
                                                          {"name": "k=1,name=elbo,seed=0"}]}))
    return root


def _md_table(md: str, section: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the markdown table under ``## section``."""
    text = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0][2:-2].split(" | ")]
    return header, [[c.strip() for c in l[2:-2].split(" | ")] for l in lines[2:]]


def _md_rows(md: str, section: str) -> dict[str, list[str]]:
    """{first cell: cells} of the table under ``## section`` (first cells unique); 'header': the header."""
    header, rows = _md_table(md, section)
    out = {"header": header}
    for cells in rows:
        assert cells[0] not in out, f"duplicate row {cells[0]!r}"
        out[cells[0]] = cells
    return out


def test_runs_table_values(sweep_dir: Path):
    md = report.write_report(str(sweep_dir), plots=False)
    rows = _md_rows(md, "Runs")
    header = rows["header"]
    # the markdown keeps every column: the run's folder, the fields that differ, every metric; what all runs
    # share (beta 1, the dataset) is the common settings line above
    assert header == ["folder", "objective", "k", "flow", "seed", "test ELBO", "IWAE_1", "IWAE_5",
                      "IWAE_50", "IWAE_5000", "NLL (K=5000)", "active units", "MI", "marginal KL",
                      "wall time (s)"]
    common = md.split("Common settings: ", 1)[1].split("\n", 1)[0]
    assert "dataset=digits" in common and "beta=1" in common and "latent_dim=8" in common
    col = {h: i for i, h in enumerate(header)}
    r = rows["k=1,name=elbo,seed=1"]
    assert [r[col[h]] for h in ("objective", "k", "flow", "seed")] == ["elbo", "1", "none", "1"]
    assert [r[col[h]] for h in ("test ELBO", "IWAE_1", "IWAE_5", "IWAE_50", "IWAE_5000", "NLL (K=5000)")] == [
        "-27.30", "-27.40", "-26.20", "-25.70", "-25.50", "25.50"]
    assert [r[col[h]] for h in ("active units", "MI", "marginal KL", "wall time (s)")] == ["7", "3.10", "4.00", "60.0"]
    f = rows["flow_length=4,k=5,name=iwae,seed=0"]
    assert f[col["flow"]] == "planar×4" and f[col["IWAE_1"]] == "" and f[col["IWAE_50"]] == ""
    assert f[col["IWAE_5"]] == "-25.60" and f[col["NLL (K=5000)"]] == "24.80"
    i = rows["k=5,name=iwae,seed=0"]
    assert i[col["MI"]] == "" and i[col["marginal KL"]] == "" and i[col["active units"]] == "6"
    assert "exact log p(x)" not in header  # only when some run has it
    # unfinished runs are not in the results table
    assert not any(k.startswith("k=50,") or k.startswith("k=13,") for k in rows)

    # CSV: one row per finished run, raw numbers
    with open(sweep_dir / "report.csv") as fh:
        csv_rows = {row["run"]: row for row in csv.DictReader(fh)}
    assert set(csv_rows) == {"k=1,name=elbo,seed=0", "k=1,name=elbo,seed=1", "k=5,name=iwae,seed=0",
                             "flow_length=4,k=5,name=iwae,seed=0"}
    assert csv_rows["flow_length=4,k=5,name=iwae,seed=0"]["label"] == "iwae k=5, flow=planar×4, seed=0"
    c = csv_rows["k=1,name=elbo,seed=0"]
    assert float(c["test_elbo"]) == -27.1 and float(c["iwae_5000"]) == -25.3 and float(c["nll"]) == 25.3
    assert c["nll_k"] == "5000" and c["objective"] == "elbo" and c["seed"] == "0" and c["flow"] == "none"
    assert csv_rows["k=5,name=iwae,seed=0"]["mutual_information"] == ""
    assert csv_rows["flow_length=4,k=5,name=iwae,seed=0"]["flow_length"] == "4"
    assert (sweep_dir / "report.md").read_text() == md


def test_mean_std_over_seeds(sweep_dir: Path):
    md = report.write_report(str(sweep_dir), plots=False)
    header, rows = _md_table(md, "Mean ± std over seeds")
    col = {h: i for i, h in enumerate(header)}
    assert "seed" not in header and "seeds" in header
    assert [r[0] for r in rows] == ["elbo k=1, flow=none", "iwae k=5, flow=none", "iwae k=5, flow=planar×4"]
    elbo_rows = [r for r in rows if r[col["objective"]] == "elbo"]
    assert len(elbo_rows) == 1
    r = elbo_rows[0]
    assert r[col["seeds"]] == "2"
    sd = math.sqrt(((-27.1 + 27.2) ** 2 + (-27.3 + 27.2) ** 2) / 1)  # sample std, n - 1 = 1
    assert r[col["test ELBO"]] == f"-27.20 ± {sd:.2f}" == "-27.20 ± 0.14"
    assert r[col["NLL (K=5000)"]] == "25.40 ± 0.14"
    assert r[col["active units"]] == "6 ± 0.71"
    assert r[col["wall time (s)"]] == "55.6 ± 6.22"  # (60 - 51.2) / sqrt(2)
    iwae = [r for r in rows if r[col["objective"]] == "iwae"]
    assert len(iwae) == 2  # no flow and planar x 4 are different configs
    single = [r for r in iwae if r[col["flow"]] == "none"][0]
    assert single[col["seeds"]] == "1" and single[col["test ELBO"]] == "-28.00" and single[col["MI"]] == ""
    with open(sweep_dir / "report_seeds.csv") as fh:
        seeds = list(csv.DictReader(fh))
    e = [s for s in seeds if s["objective"] == "elbo"][0]
    assert float(e["nll_mean"]) == pytest.approx(25.4) and float(e["nll_std"]) == pytest.approx(0.1414213, 1e-5)
    assert e["seeds"] == "0 1" and e["n"] == "2"


def test_seed_groups_use_the_whole_config(tmp_path: Path):
    root = tmp_path / "runs" / "lr"
    for lr in (1e-3, 3e-4):
        for seed in (0, 1, 2):
            _write_run(root, f"lr={lr},seed={seed}",
                       _results("elbo", 1, seed, -27.0 - seed, {"1": -27.0}, 27.0, lr=lr), curves=False)
    md = report.write_report(str(root), plots=False)
    header, rows = _md_table(md, "Mean ± std over seeds")
    col = {h: i for i, h in enumerate(header)}
    assert [r[col["config"]] for r in rows] == ["learning_rate=0.0003", "learning_rate=0.001"]  # numeric order
    assert [r[col["learning_rate"]] for r in rows] == ["0.0003", "0.001"]
    for r in rows:
        assert r[col["seeds"]] == "3" and r[col["test ELBO"]] == "-28.00 ± 1.00"


def test_a_run_in_the_old_flat_layout_groups_with_its_new_layout_seed(tmp_path: Path):
    """A workdir written before model.prior_components moved to model.prior_options.components (configs.
    RENAMED) is one seed group with a run of today's layout, not a second configuration."""
    root = tmp_path / "runs" / "vamp"
    for seed in (0, 1):
        r = _results("elbo", 1, seed, -27.0 - seed, {"1": -27.0}, 27.0)
        r["config"]["model"]["prior"] = "vampprior"
        if seed == 0:
            r["config"]["model"]["prior_components"] = 50
        else:
            r["config"]["model"]["prior_options"] = {"components": 50}
        _write_run(root, f"seed={seed}", r, curves=False)
    runs = report.load_runs(str(root))
    assert [run.results["config"]["model"]["prior_options"] for run in runs] == [{"components": 50}] * 2
    assert all("prior_components" not in run.results["config"]["model"] for run in runs)
    header, rows = _md_table(report.write_report(str(root), plots=False), "Mean ± std over seeds")
    assert len(rows) == 1 and rows[0][header.index("seeds")] == "2"


def test_unfinished_and_failed_runs_are_listed(sweep_dir: Path):
    md = report.write_report(str(sweep_dir), plots=False)
    assert "4 finished run(s), 5 unfinished or failed." in md
    rows = _md_rows(md, "Unfinished and failed runs")
    assert rows["header"] == ["run", "status", "step", "message", "exit code", "log"]
    assert rows["k=50,name=iwae,seed=0"][1:5] == ["running", "1200", "epoch 20", ""]
    assert rows["k=50,name=iwae,seed=1"][1:5] == ["preempted", "800", "SIGTERM", "3"]
    assert rows["k=13,name=iwae,seed=0"][1:5] == ["failed", "3", "NaN loss", "1"]
    assert rows["k=13,name=iwae,seed=0"][5] == str(sweep_dir / "k=13,name=iwae,seed=0" / "log.txt")
    assert rows["crashed"][1] == "failed" and rows["crashed"][4] == "-9"  # died with status "running"
    assert rows["k=500,name=iwae,seed=0"][1] == "not started"  # planned in sweep.json, no files
    assert list(rows)[1:3] == ["crashed", "k=13,name=iwae,seed=0"]  # failures first


def test_plots_and_html(sweep_dir: Path):
    report.write_report(str(sweep_dir))
    for name in ("report_bound_vs_k.png", "report_curves.png", "report_nll_vs_flow_length.png"):
        data = (sweep_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    md = (sweep_dir / "report.md").read_text()
    assert "![Test bound vs K](report_bound_vs_k.png)" in md
    page = (sweep_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    embedded = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(embedded).startswith(PNG_MAGIC)
    assert "<table>" in page and "planar×4" in page and "k=13,name=iwae,seed=0" in page
    assert "<img" in page and "http" not in page  # self-contained


def test_exact_log_px_column_and_no_flow_plot(tmp_path: Path):
    root = tmp_path / "runs" / "lg"
    _write_run(root, "k=1", _results("elbo", 1, 0, -10.0, {"1": -10.0, "10": -9.5}, 9.5, exact=-9.25, nll_k=10))
    _write_run(root, "k=10", _results("iwae", 10, 0, -10.5, {"1": -10.5, "10": -9.4}, 9.4, exact=-9.3, nll_k=10))
    md = report.write_report(str(root))
    rows = _md_rows(md, "Runs")
    col = {h: i for i, h in enumerate(rows["header"])}
    assert rows["k=1"][col["exact log p(x)"]] == "-9.25" and rows["k=10"][col["exact log p(x)"]] == "-9.30"
    assert rows["k=10"][col["NLL (K=10)"]] == "9.40"
    assert "Mean ± std" not in md  # no seeds to aggregate
    assert (root / "report_bound_vs_k.png").exists()
    assert not (root / "report_nll_vs_flow_length.png").exists()  # one flow length only


def test_cli_and_empty_folder(tmp_path: Path, sweep_dir: Path, capsys):
    assert report.main([str(sweep_dir), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Report: {sweep_dir}") and "| k=1,name=elbo,seed=0 |" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 0
    assert "0 finished run(s), 0 unfinished or failed." in capsys.readouterr().out
    assert report.main([str(tmp_path / "missing")]) == 2


def test_weight_health_columns_and_snr_figures(tmp_path: Path):
    """ESS/K (mean, 10th percentile) at the NLL's K and the share of k-hat > 0.7 appear as columns when runs
    have them; snr_<checkpoint>.png written by ``python -m jaxvae.diagnose`` into a workdir is shown."""
    root = tmp_path / "runs" / "tb"
    res = _results("iwae", 64, 0, -90.0, {"1": -90.0, "1000": -86.0}, 86.0, nll_k=1000)
    res["test"].update(ess={"1": {"mean": 1.0, "p10": 1.0}, "1000": {"mean": 0.0123, "p10": 0.0021}},
                       pareto_k={"k": 1000, "mean": 0.61, "median": 0.6, "max": 1.2, "frac_above_0_7": 0.25})
    wd = _write_run(root, "k=64", res)
    _write_run(root, "k=1", _results("elbo", 1, 0, -91.0, {"1": -91.0, "1000": -87.0}, 87.0, nll_k=1000))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.plot([1, 2])
    plt.savefig(wd / "snr_init.png")
    plt.close()
    md = report.write_report(str(root))
    rows = _md_rows(md, "Runs")
    col = {h: i for i, h in enumerate(rows["header"])}
    assert rows["k=64"][col["ESS/K"]] == "0.012" and rows["k=64"][col["ESS/K p10"]] == "0.002"
    assert rows["k=64"][col["k-hat > 0.7"]] == "0.250" and rows["k=1"][col["ESS/K"]] == ""
    assert "![Gradient SNR vs K: k=64 (init)](k=64/snr_init.png)" in md
    assert (root / "report.html").read_text().count('src="data:image/png;base64,') >= 2


def test_importing_the_report_needs_neither_jax_nor_matplotlib():
    code = "import sys, jaxvae.sweeps.report; print(sorted({'jax', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
