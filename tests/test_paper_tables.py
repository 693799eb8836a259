"""Paper tables (jaxvae.sweeps.report.paper_tables): published values from jaxvae/sweeps/papers/*.json beside a
sweep's results, laid out like the paper's table; wired into the report."""

from __future__ import annotations

import json

import pytest

from jaxvae.experiment.configs import base_config
from jaxvae.sweeps.report import paper_tables as P
from jaxvae.sweeps.report import build_report, main


def _results(seed, nll, train_nll, au_layers, layers=2, k=5, obj="iwae", data="mnist"):
    c = base_config()
    c.seed = seed
    c.data.name, c.data.binarize = data, "dynamic"
    c.model.stochastic_layers = layers
    c.model.latent_dims = (100, 50) if layers == 2 else ()
    c.objective.name, c.objective.k = obj, k
    return {"name": "x", "status": "finished", "config": c.to_dict(),
            "test": {"nll": nll, "active_units": sum(au_layers), "active_units_per_layer": au_layers,
                     "elbo": -nll - 3, "iwae": {"5000": -nll}},
            "train_set": {"nll": train_nll}}


def test_every_paper_file_loads_and_table1_holds_the_issue_values():
    tables = {t.file: t for t in P.load_paper_tables()}
    t1 = tables["burda2015_table1.json"]
    assert t1.metric == "nll" and t1.grid and len(t1.rows) == 24
    value = {r["label"]: r["value"] for r in t1.rows}
    assert value["MNIST, 1 layer, IWAE, k=50"] == 84.78
    assert value["MNIST, 2 layers, IWAE, k=5"] == 83.89
    assert value["Omniglot, 2 layers, IWAE, k=50"] == 103.38
    assert value["Omniglot, 1 layer, VAE, k=50"] == 107.80


def test_grid_mean_std_difference_and_active_units():
    """Two seeds of MNIST 2-layer IWAE k=5 (NLL 84 and 86): 85.00 ± 1.41 beside 83.89, diff +1.11; active
    units 30 (20+10) and 32 (21+11) -> 31 (20.5+10.5); train-set 82 and 83 -> gap -2.50."""
    runs = [_results(0, 84.0, 82.0, [20, 10]), _results(1, 86.0, 83.0, [21, 11]),
            _results(0, 90.0, 88.0, [5], layers=1, k=1, obj="elbo", data="omniglot")]
    secs = {s["file"]: s for s in P.paper_tables(runs)}
    sec = secs["burda2015_table1.json"]
    (_, gh, grows, _), (_, dh, drows, _) = sec["tables"]
    row = next(r for r in grows if r[0] == "MNIST, 2 layers, k=5")
    cell = dict(zip(gh, row))
    assert cell["IWAE ours"] == "85.00 ± 1.41 (n=2)" and cell["IWAE paper"] == "83.89"
    assert cell["IWAE diff"] == "+1.11" and cell["IWAE active units"] == "31 (20.5+10.5)"
    assert cell["VAE ours"] == "" and cell["VAE paper"] == "85.01"
    detail = {r[0]: dict(zip(dh, r)) for r in drows}
    d = detail["MNIST, 2 layers, IWAE, k=5"]
    assert d["seeds"] == "0 1" and d["train set (mean)"] == "82.50" and d["train − test"] == "-2.50"
    # the elbo k=1 run stands for both VAE k=1 and IWAE k=1 (the same objective)
    om = next(r for r in grows if r[0] == "Omniglot, 1 layer, k=1")
    assert dict(zip(gh, om))["VAE diff"] == "-18.11" and dict(zip(gh, om))["IWAE diff"] == "-18.11"
    assert "the z_1 count is an upper bound" in sec["note"]  # deep models' z_1 count is flagged
    one_layer = {s["file"]: s for s in P.paper_tables(runs[2:])}["burda2015_table1.json"]
    assert "upper bound" not in one_layer["note"]


def test_match_needs_every_field_and_assume_stands_in():
    static = _results(0, 87.0, 86.0, [20, 10])
    static["config"]["data"]["binarize"] = "none"
    static["config"]["data"]["name"] = "binarized_mnist"
    assert P.paper_tables([static]) == []
    secs = P.paper_tables([static], assume={"data.name": "mnist", "data.binarize": "dynamic"})
    assert secs and "anchors" in secs[0]["note"]
    (_, gh, grows, _) = secs[0]["tables"][0]
    assert [r[0] for r in grows] == ["MNIST, 2 layers, k=5"]  # not the Omniglot rows
    # an older run without model.stochastic_layers in its config counts as the default (1 layer)
    old = _results(0, 88.0, 87.0, [19], layers=1, k=5, obj="iwae")
    del old["config"]["model"]["stochastic_layers"]
    (_, gh, grows, _) = P.paper_tables([old])[0]["tables"][0]
    assert dict(zip(gh, next(r for r in grows if r[0] == "MNIST, 1 layer, k=5")))["IWAE paper"] == "85.54"


def test_malformed_paper_file_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"paper": "X", "table": "T", "metric": "nll",
                                                   "rows": [{"label": "a", "match": {}, "value": "86"}]}))
    with pytest.raises(P.PaperFileError, match=r"bad\.json.*rows\[0\]"):
        P.load_paper_tables(tmp_path)


def test_report_lays_out_the_paper_table(tmp_path):
    for i, (seed, nll) in enumerate(((0, 84.0), (1, 86.0))):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_results(seed, nll, 82.0, [20, 10])))
        (d / "status.json").write_text(json.dumps({"status": "finished", "step": 1}))
    rep = build_report(str(tmp_path), plots=False)
    md = rep.markdown()
    assert "Burda, Grosse & Salakhutdinov 2015, Table 1: test NLL (nats)" in md
    assert "85.00 ± 1.41 (n=2)" in md and "+1.11" in md
    assert "Table 1" in rep.html()


def test_cli_paper_tables_alone_and_assume(tmp_path, capsys):
    """``python -m jaxvae.sweeps.report RUNS --paper-tables [--assume F=V]`` prints the paper tables alone."""
    static = _results(0, 87.0, 86.0, [20, 10])
    static["config"]["data"]["binarize"] = "none"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(static))
    assert main([str(tmp_path), "--paper-tables"]) == 0
    assert capsys.readouterr().out == "no finished run matches a published table\n"
    assert main([str(tmp_path), "--paper-tables", "--assume", "data.binarize=dynamic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Burda, Grosse & Salakhutdinov 2015, Table 1") and "anchors" in out
    assert not (tmp_path / "report.md").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--assume", "data.binarize=dynamic"])  # --assume only with --paper-tables


def _static(obj, k, layers=1, seed=0, nll=89.0, latent_dim=50, hidden=(200, 200)):
    r = _results(seed, nll, nll - 1.0, [20] if layers == 1 else [20, 10], layers=layers, k=k, obj=obj,
                 data="binarized_mnist")
    r["config"]["data"]["binarize"] = "none"
    r["config"]["model"]["latent_dim"] = latent_dim
    r["config"]["model"]["encoder_hidden"] = r["config"]["model"]["decoder_hidden"] = list(hidden)
    return r


def test_static_mnist_tables_hold_the_cited_values():
    """The static-binarization values and where they come from (the note names source, data, architecture
    and budget): the IWAE paper's appendix D as quoted by nbip/IWAE, pythae's own reproductions."""
    tables = {t.file: t for t in P.load_paper_tables()}
    static = tables["burda2015_static.json"]
    assert {r["label"]: r["value"] for r in static.rows} == {
        "static MNIST, 1 layer, IWAE, k=1 (the VAE objective)": 88.71, "static MNIST, 1 layer, IWAE, k=5": 87.63,
        "static MNIST, 1 layer, IWAE, k=50": 87.10}
    for text in ("statically binarized", "784-200-200-50", "3280 passes", "nbip/IWAE", "ff9fca90", "1509.00519"):
        assert text in static.note, text
    pythae = tables["pythae_static.json"]
    assert sorted(r["value"] for r in pythae.rows) == [86.82, 89.78]
    for text in ("benchmark_VAE", "6419e21", "200 importance samples", "3280 epochs", "500 epochs"):
        assert text in pythae.note, text
    assert all(r["match"]["data.name"] == "binarized_mnist" for t in (static, pythae) for r in t.rows)


def test_static_runs_get_the_static_values_and_only_matching_architectures():
    runs = [_static("elbo", 1, seed=0, nll=90.0), _static("elbo", 1, seed=1, nll=90.4), _static("iwae", 50, nll=87.5),
            _static("iwae", 5, layers=2, nll=88.0)]
    secs = {s["file"]: s for s in P.paper_tables(runs)}
    assert "burda2015_table1.json" not in secs  # dynamic-MNIST values are not set beside static runs
    (_, gh, grows, _), _ = secs["burda2015_static.json"]["tables"]
    cells = {r[0]: dict(zip(gh, r)) for r in grows}
    assert cells["static MNIST, 1 layer, k=1"]["IWAE ours"] == "90.20 ± 0.28 (n=2)"
    assert cells["static MNIST, 1 layer, k=1"]["IWAE diff"] == "+1.49"
    assert cells["static MNIST, 1 layer, k=50"]["IWAE paper"] == "87.10"
    assert list(cells) == ["static MNIST, 1 layer, k=1", "static MNIST, 1 layer, k=50"]  # none for 2 layers
    pythae = {r[0]: dict(zip(secs["pythae_static.json"]["tables"][0][1], r))
              for r in secs["pythae_static.json"]["tables"][0][2]}
    assert list(pythae) == ["IWAE k=50, 1 layer, 784-200-200-50 tanh, 3280 epochs (pythae)"]
    assert pythae["IWAE k=50, 1 layer, 784-200-200-50 tanh, 3280 epochs (pythae)"]["ours − paper"] == "+0.68"
    # the VAE row of pythae needs its 784-400-40 network
    vae = P.paper_tables([_static("elbo", 1, latent_dim=40, hidden=(400,))])
    assert [s["file"] for s in vae] == ["pythae_static.json"]
    assert vae[0]["tables"][0][2][0][3] == "89.78"
