"""docs/tutorial.ipynb (issue 29 item 1): it agrees with its jupytext twin docs/tutorial.py (the file
reviewed in diffs), and it executes top to bottom on the embedded digits with the current interpreter,
showing real numbers and a finished run as an HTML table.

Regenerate the notebook after editing docs/tutorial.py, with its outputs (executed in a scratch folder)::

    python tests/test_tutorial.py          # writes docs/tutorial.ipynb
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

DOCS = Path(__file__).resolve().parents[1] / "docs"
KERNEL = "jaxvae-tutorial"
RUN_TABLE = "<table class='jaxvae-run'>"  # how a jaxvae Run renders itself (Run._repr_html_)
BUDGET_S = 120  # issue 29: under 2 minutes on a 2-core CPU (about 32 s there when the machine is idle)
# The default run's sibling executes sections 1-3 (train two runs with their own AIS and gap evaluations,
# load them, the bound against K: ~17 s idle, ~23 s beside the other pytest worker); the whole notebook
# (30-48 s) is marked slow. The later sections' Run methods (ais, bdmc, gaps, weight_health, snr, equal to
# results.json's entries) are checked in the default run by tests/test_run_api.py.
FIRST_SECTIONS = "## 4."  # the default run stops before the markdown cell that opens with this heading


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def _outputs(nb, key: str) -> list[str]:
    """Every code cell output's ``key`` ("text" of streams, or a mime type of display data) as text."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if key == "text" and o.get("output_type") == "stream":
                out.append(o["text"])
            elif key in o.get("data", {}):
                out.append(o["data"][key])
    return out


def execute(workdir: Path, kernel_root: Path, stop_before: str | None = None):
    """The notebook of docs/tutorial.py executed in ``workdir`` by a kernel of this interpreter (a kernel spec
    written under ``kernel_root``, found through JUPYTER_PATH), with matplotlib's inline backend; with
    ``stop_before``, only the cells before the first markdown cell that starts with it."""
    spec = kernel_root / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(kernel_root), os.environ.get("JUPYTER_PATH", "")]).rstrip(
        os.pathsep)
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="agg", PYTHONUNBUFFERED="1")
    nb = jupytext.read(DOCS / "tutorial.py")
    if stop_before is not None:
        cut = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith(stop_before)]
        assert cut, f"docs/tutorial.py has no section {stop_before!r}"
        nb.cells = nb.cells[:cut[0]]
    NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(workdir)}}).execute(
        env=env)
    nb.metadata.kernelspec = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for cell in nb.cells:  # keep the stored notebook free of timestamps
        cell.metadata.pop("execution", None)
    return nb


def test_the_notebook_and_its_jupytext_twin_agree():
    twin = jupytext.read(DOCS / "tutorial.py")
    stored = nbformat.read(DOCS / "tutorial.ipynb", as_version=4)
    assert _cells(stored) == _cells(twin), "docs/tutorial.ipynb is stale: run `python tests/test_tutorial.py`"
    # what a reader of the stored notebook sees was computed: every code cell ran, in order, without errors
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any(RUN_TABLE in h for h in _outputs(stored, "text/html"))


def _run_table(html: list[str], *needles: str) -> bool:
    return any(RUN_TABLE in h and all(n in h for n in needles) for h in html)


def test_the_tutorial_executes_its_first_three_sections(tmp_path, monkeypatch):
    """The default run's sibling of the test below: train (with the runs' own AIS and gap evaluations), load,
    and the bound against K, executed as a reader executes them."""
    monkeypatch.setenv("JUPYTER_PATH", os.environ.get("JUPYTER_PATH", ""))  # restored after the test
    nb = execute(tmp_path, tmp_path / "jupyter", stop_before=FIRST_SECTIONS)
    text = "".join(_outputs(nb, "text"))
    assert _run_table(_outputs(nb, "text/html"), "iwae, K=5", "finished")
    for expected in ("AIS log p(x) (10 ex., T=50)", "amortization gap", "elbo: ELBO", "iwae: ELBO", "IWAE_500"):
        assert expected in text, expected
    assert len(_outputs(nb, "image/png")) == 1  # the bound against K
    for name in ("elbo", "iwae"):
        results = json.loads((tmp_path / "runs" / "tutorial" / name / "results.json").read_text())
        assert results["status"] == "finished"


@pytest.mark.slow  # 30-48 s on the 2-core CI machine; its first three sections run in the default run (above)
def test_the_tutorial_executes_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", os.environ.get("JUPYTER_PATH", ""))  # restored after the test
    t0 = time.time()
    nb = execute(tmp_path, tmp_path / "jupyter")
    seconds = time.time() - t0
    html = _outputs(nb, "text/html")
    text = "".join(_outputs(nb, "text"))
    assert _run_table(html, "iwae, K=5", "finished"), html
    assert _run_table(html, "renyi, K=5")  # the custom bound's run
    assert "equals results.json's test.ais: True" in text
    assert text.count("equals results.json: True") == 2  # weight health of both runs
    for expected in ("AISEstimate(10 examples, T=50", "IWAE_5000", "InferenceGaps(", "WeightHealth(",
                     "GradientSNR(", "notebook run time"):
        assert expected in text, expected
    assert len(_outputs(nb, "image/png")) >= 6  # bounds, sandwich, gaps, k-hat, SNR, samples and traversal
    for name in ("elbo", "iwae", "renyi"):
        results = json.loads((tmp_path / "runs" / "tutorial" / name / "results.json").read_text())
        assert results["status"] == "finished"
    assert seconds < BUDGET_S, f"the tutorial took {seconds:.0f} s"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        start = time.time()
        notebook = execute(Path(scratch), Path(scratch) / "jupyter")
        nbformat.write(notebook, DOCS / "tutorial.ipynb")
        print(f"wrote {DOCS / 'tutorial.ipynb'} (executed in {time.time() - start:.0f} s)")
