"""The compact report of a real sweep's layout (issue #30), without a browser: the 8 runs of
benchmarks/iwae_hier_static.py and the 40 of experiments/iwae_table1.py as fake run folders (the
launcher's run names and sweep.json, the experiment's own configs, made-up numbers); the common settings
line, the run names, the row order, the columns of the HTML, markdown and CSV, the structure report.html's
script relies on, and the published static-MNIST values beside the runs.

``write_sweep`` is also what benchmarks/report_browser_check.sh renders in headless Chromium.
"""

from __future__ import annotations

import csv
import html.parser
import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "benchmarks" / "iwae_hier_static.py"
TABLE1 = ROOT / "experiments" / "iwae_table1.py"


# -- fake sweeps --------------------------------------------------------------------------------------
def _fake_results(config: dict, workdir: str) -> dict:
    """Plausible numbers for one run of the IWAE-paper models (deterministic in the config)."""
    data, layers = config["data"]["name"], config["model"]["stochastic_layers"]
    obj, k, seed = config["objective"]["name"], config["objective"]["k"], config["seed"]
    nll = {"mnist": 87.3, "omniglot": 108.4, "binarized_mnist": 90.1}.get(data, 95.0)
    nll -= 1.4 * (layers - 1) + (0.55 if obj == "iwae" else 0.08) * math.log(k) - 0.21 * seed
    elbo = -(nll + 4.0 - (1.5 if obj == "iwae" else 0.3) * math.log10(k))
    iwae = {"1": elbo, "5": -(nll + 1.9), "50": -(nll + 0.7), "5000": -nll}
    au = [19 + (4 if obj == "iwae" else 0) + seed] + ([8 + seed] if layers == 2 else [])
    return {
        "name": config["name"], "workdir": workdir, "status": "finished", "config": config,
        "summary": {"dataset": data, "objective": obj, "k": k, "flow": config["model"]["flow"],
                    "flow_length": config["model"]["flow_length"], "beta": config["objective"]["beta"],
                    "seed": seed, "latent_dim": config["model"]["latent_dim"]},
        "test": {"elbo": round(elbo, 4), "reconstruction": round(elbo + 25.0, 4), "kl": 25.0,
                 "iwae": {kk: round(v, 4) for kk, v in iwae.items()}, "nll": round(nll, 4), "nll_k": 5000,
                 "active_units": sum(au), "active_units_per_layer": au, "mutual_information": 8.9,
                 "marginal_kl": 16.1 + seed, "num_examples": 10000},
        "train_set": {"nll": round(nll - 1.1, 4), "num_examples": 1000},
        "valid": {"iwae": {"50": round(-(nll + 0.9), 4)}},
        "train": {"steps": 245_000, "epochs": 98.4, "wall_time_s": 3100.0 + 900 * layers + 40 * k,
                  "examples_per_s": 1580.0},
        "eval_wall_time_s": 310.0, "curves": "metrics.jsonl",
    }


def write_sweep(experiment: Path, root: Path) -> Path:
    """The experiment's sweep under ``root`` as the launcher lays it out (ROOT/<stem>/<run name>/ and
    sweep.json), each run finished with ``_fake_results``; returns the sweep folder."""
    from jaxvae.sweeps.plan import load_module, make_runs

    runs, sweep_dir = make_runs(str(experiment), str(root))
    module = load_module(str(experiment))
    manifest = []
    for run in runs:
        config = module.get_config()
        config.train.budget = 0.03  # the measurement: 98.4 passes
        config.update_from_flattened_dict(dict(run.overrides))
        wd = Path(run.workdir)
        wd.mkdir(parents=True)
        (wd / "results.json").write_text(json.dumps(_fake_results(config.to_dict(), str(wd))))
        (wd / "status.json").write_text(json.dumps({"status": "finished", "step": 245_000}))
        manifest.append({"name": run.name, "index": run.index,
                         "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in run.overrides.items()},
                         "command": f"python -m jaxvae.main --config={experiment}"})
    (Path(sweep_dir) / "sweep.json").write_text(json.dumps({"experiment": str(experiment), "runs": manifest}))
    return Path(sweep_dir)


# -- reading report.html ------------------------------------------------------------------------------
class _Tables(html.parser.HTMLParser):
    """Every ``div.rt`` of a page: its id, header cells (text, class, attributes), rows (cells with their
    class and data-v) and whether a script is inline."""

    def __init__(self):
        super().__init__()
        self.tables, self.cur, self.cell, self.scripts, self.links = [], None, None, [], []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "rt" in (a.get("class") or "").split():
            self.cur = {"id": a.get("id"), "head": [], "rows": [], "details_box": False}
            self.tables.append(self.cur)
        elif tag == "input" and self.cur is not None and "dt" in (a.get("class") or "").split():
            self.cur["details_box"] = a.get("type") == "checkbox"
        elif tag == "tr" and self.cur is not None:
            self.cur["rows"].append([])
        elif tag in ("th", "td") and self.cur is not None:
            self.cell = {"tag": tag, "class": (a.get("class") or "").split(), "attrs": a, "text": ""}
        elif tag == "script":
            self.in_script = True
            self.scripts.append(a)
        elif tag in ("link", "img", "iframe") or (tag == "script" and a.get("src")):
            self.links.append((tag, a))

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            (self.cur["head"] if self.cell["tag"] == "th" else self.cur["rows"][-1]).append(self.cell)
            self.cell = None
        elif tag == "div" and self.cur is not None and self.cell is None and self.cur["rows"]:
            self.cur = None
        elif tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def parse_tables(page: str) -> dict:
    p = _Tables()
    p.feed(page)
    out = {t["id"]: t for t in p.tables}
    for t in out.values():
        t["rows"] = [r for r in t["rows"] if r]
    out["_scripts"] = p.scripts
    out["_links"] = p.links
    return out


def default_columns(table: dict) -> list[str]:
    return [c["text"] for c in table["head"] if "d" not in c["class"]]


def estimated_width(table: dict, char_px: float = 7.2, pad_px: float = 15.0) -> float:
    """A rough width in pixels of the default (non-details) columns at report.html's 13px font: the
    widest cell of each column (text wraps in the name column only at spaces: its longest word counts
    for the minimum, its whole text for the preferred width)."""
    width = 0.0
    for i, th in enumerate(table["head"]):
        if "d" in th["class"]:
            continue
        texts = [th["text"]] + [r[i]["text"] for r in table["rows"]]
        width += max(len(t) for t in texts) * char_px + pad_px
    return width


# -- tests --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def static_report(tmp_path_factory):
    from jaxvae.sweeps import report

    sweep = write_sweep(STATIC, tmp_path_factory.mktemp("static"))
    md = report.write_report(str(sweep), plots=False, verbose=False)
    return sweep, md, (sweep / "report.html").read_text()


def test_static_sweep_common_settings_names_and_order(static_report):
    """The 8 runs of iwae_hier_static: what every run shares is one line; the runs are named by the fields
    that differ, in the sweep's declared order (not alphabetically: 1- and 2-layer runs do not interleave)."""
    _, md, page = static_report
    t = parse_tables(page)["t-runs"]
    names = [r[0]["text"] for r in t["rows"]]
    assert names == ["1 layer, elbo k=1, seed=0", "1 layer, elbo k=1, seed=1", "1 layer, iwae k=5, seed=0",
                     "1 layer, iwae k=5, seed=1", "2 layers, elbo k=1, seed=0", "2 layers, elbo k=1, seed=1",
                     "2 layers, iwae k=5, seed=0", "2 layers, iwae k=5, seed=1"]
    common = md.split("Common settings: ", 1)[1].split("\n", 1)[0]
    for setting in ("dataset=binarized_mnist", "binarize=none", "flow=none", "beta=1", "batch=20",
                    "test examples=10000"):
        assert setting in common, setting
    assert 'class="common">Common settings: experiment=iwae_hier_static, dataset=binarized_mnist' in page
    # the default HTML columns: the name, the grouping fields, ELBO, IWAE_K, NLL, active units
    assert default_columns(t) == ["run", "layers", "objective", "k", "seed", "test ELBO", "IWAE_1", "IWAE_5",
                                  "IWAE_50", "IWAE_5000", "NLL (K=5000)", "active units"]
    details = [c["text"] for c in t["head"] if "d" in c["class"]]
    assert details == ["latent_dims", "MI", "marginal KL", "wall time (s)", "folder"]  # latent_dims follows layers
    groups = [c["text"] for c in t["head"] if c["attrs"].get("data-group")]
    assert groups == ["layers", "objective", "k", "seed"]
    assert estimated_width(t) < 1400 - 2 * 32  # body margins of 2em; checked in Chromium by the script


def test_static_sweep_markdown_and_csv_keep_every_column(static_report):
    sweep, md, _ = static_report
    runs = md.split("## Runs\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = [c.strip() for c in runs[0].strip("|").split("|")]
    assert header == ["folder", "layers", "latent_dims", "objective", "k", "seed", "test ELBO", "IWAE_1", "IWAE_5",
                      "IWAE_50", "IWAE_5000", "NLL (K=5000)", "active units", "MI", "marginal KL",
                      "wall time (s)"]
    assert runs[2].startswith("| k=1,latent_dims=empty,name=elbo,seed=0,stochastic_layers=1 | 1 | () | elbo |")
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows][:2] == ["1 layer, elbo k=1, seed=0", "1 layer, elbo k=1, seed=1"]
    r = rows[6]
    assert r["run"] == "k=5,latent_dims=100-50,name=iwae,seed=0,stochastic_layers=2"
    assert r["model.stochastic_layers"] == "2" and r["model.latent_dims"] == "(100, 50)"
    assert float(r["nll"]) == pytest.approx(90.1 - 1.4 - 0.55 * math.log(5), abs=1e-4)
    for key in ("test_elbo", "iwae_5000", "active_units", "mutual_information", "marginal_kl", "wall_time_s"):
        assert r[key] != "", key


def test_static_sweep_gets_the_published_static_values(static_report):
    """Static-MNIST runs get the IWAE paper's static-binarization values (appendix D as quoted by the nbip/IWAE
    reproduction) beside them, with the binarization and budget said; 2-layer runs have none."""
    _, md, page = static_report
    sec = md.split("## Burda, Grosse & Salakhutdinov 2015, appendix D", 1)[1].split("\n## ", 1)[0]
    assert "statically binarized" in sec and "3280 passes" in sec and "nbip/IWAE" in sec
    grid = {line.split("|")[1].strip(): line for line in sec.splitlines() if line.startswith("| static MNIST, 1 layer, k=")}
    assert set(grid) == {"static MNIST, 1 layer, k=1", "static MNIST, 1 layer, k=5"}
    assert "| 88.71 |" in grid["static MNIST, 1 layer, k=1"] and "| 87.63 |" in grid["static MNIST, 1 layer, k=5"]
    assert "2 layers" not in sec
    assert "appendix D" in page


def test_html_structure_for_the_script(static_report):
    """What the inline script relies on, and that the page needs nothing from outside: one inline script,
    no external resource, every row with a cell per header, numbers with their sort value."""
    _, _, page = static_report
    tables = parse_tables(page)
    assert {k for k in tables if not k.startswith("_")} == {"t-runs", "t-seeds"}
    assert tables["_scripts"] == [{}] and tables["_links"] == []
    assert "http" not in page and "@import" not in page and "url(" not in page
    for tid in ("t-runs", "t-seeds"):
        t = tables[tid]
        assert t["details_box"], tid  # the CSS-only details toggle
        n = len(t["head"])
        assert all(len(r) == n for r in t["rows"])
        for i, th in enumerate(t["head"]):
            assert f"c{i}" in th["class"]
            if "num" in th["class"] and th["text"] not in ("k", "seed", "layers"):
                assert all("data-v" in r[i]["attrs"] for r in t["rows"] if r[i]["text"]), (tid, th["text"])
    t = tables["t-runs"]
    i = [c["text"] for c in t["head"]].index("NLL (K=5000)")
    nll = [float(r[i]["attrs"]["data-v"]) for r in t["rows"]]  # the raw number, the cell shows 2 decimals
    assert nll == pytest.approx([float(r[i]["text"]) for r in t["rows"]], abs=0.005)
    seeds = tables["t-seeds"]
    assert [r[0]["text"] for r in seeds["rows"]] == ["1 layer, elbo k=1", "1 layer, iwae k=5", "2 layers, elbo k=1",
                                                    "2 layers, iwae k=5"]
    assert re.search(r'<div class="ctl" hidden></div>', page)  # filled only where the script runs
    from jaxvae.sweeps.report.html_table import SCRIPT
    for hook in ('"div.rt"', '".ctl"', '"input.dt"', '"data-group"', '"data-v"', '"d"', '"off"', '"on"'):
        assert hook in SCRIPT, hook  # the markup above is what the script looks for
    assert "<noscript>" not in page  # nothing to say: without JavaScript the tables are plain tables


def test_table1_sweep_40_runs(tmp_path):
    """experiments/iwae_table1.py's 40 runs: dataset is a grouping field too, data.valid_size follows it;
    the rows keep the sweep's order (MNIST before Omniglot, 1 layer before 2, seeds together)."""
    from jaxvae.sweeps import report

    sweep = write_sweep(TABLE1, tmp_path)
    report.write_report(str(sweep), plots=False, verbose=False)
    t = parse_tables((sweep / "report.html").read_text())["t-runs"]
    names = [r[0]["text"] for r in t["rows"]]
    assert len(names) == 40 and names[:3] == ["mnist, 1 layer, elbo k=1, seed=0", "mnist, 1 layer, elbo k=1, seed=1",
                                              "mnist, 1 layer, elbo k=5, seed=0"]
    assert names[20] == "omniglot, 1 layer, elbo k=1, seed=0" and names[-1] == "omniglot, 2 layers, iwae k=50, seed=1"
    assert [c["text"] for c in t["head"] if c["attrs"].get("data-group")] == ["dataset", "layers", "objective", "k",
                                                                             "seed"]
    assert "valid_size" in [c["text"] for c in t["head"] if "d" in c["class"]]
    assert estimated_width(t) < 1400 - 2 * 32


def test_rows_without_a_manifest_follow_the_grouping_fields(tmp_path):
    """Without sweep.json the rows are ordered by the grouping fields, numbers as numbers (k=5 before
    k=50, not k=1, k=13, k=5)."""
    from jaxvae.sweeps import report

    sweep = write_sweep(STATIC, tmp_path)
    (sweep / "sweep.json").unlink()
    for name in [p.name for p in sweep.iterdir() if "seed=1" in p.name]:
        r = json.loads((sweep / name / "results.json").read_text())
        r["config"]["objective"]["k"] = 13 if r["config"]["objective"]["name"] == "iwae" else 1
        (sweep / name / "results.json").write_text(json.dumps(r))
    report.write_report(str(sweep), plots=False, verbose=False)
    names = [r[0]["text"] for r in parse_tables((sweep / "report.html").read_text())["t-runs"]["rows"]]
    assert names == ["1 layer, elbo k=1, seed=0", "1 layer, elbo k=1, seed=1", "1 layer, iwae k=5, seed=0",
                     "1 layer, iwae k=13, seed=1", "2 layers, elbo k=1, seed=0", "2 layers, elbo k=1, seed=1",
                     "2 layers, iwae k=5, seed=0", "2 layers, iwae k=13, seed=1"]


if __name__ == "__main__":  # benchmarks/report_browser_check.sh: python tests/test_report_html.py OUT [static|table1]
    out = Path(sys.argv[1])
    which = sys.argv[2] if len(sys.argv) > 2 else "table1"
    print(write_sweep(STATIC if which == "static" else TABLE1, out))
