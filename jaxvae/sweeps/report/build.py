"""The report as a whole: ``build_report`` gathers, for the runs under a folder, the tables, the plots
(``PLOTS``, drawn into the output folder) and the paper tables into a ``Report``; ``write_report`` writes
report.md, report.csv, report_seeds.csv, the compared sections' CSVs (``COMPARED``) and report.html and
returns the markdown.

Imports only the standard library and the report's other modules (matplotlib when a plot is drawn).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from jaxvae.sweeps.report import beta, objectives, paper_tables, posteriors
from jaxvae.sweeps.report.html_page import html_page
from jaxvae.sweeps.report.loading import RunRecord, load_runs
from jaxvae.sweeps.report.plots import (plot_bound_vs_k, plot_curves, plot_gaps, plot_nll_vs_flow_length, plot_sandwich,
                                        snr_figures)
from jaxvae.sweeps.report.tables import Table, problems_table, runs_table, seeds_table, write_csv

PLOTS = [  # (file name, title, plot(runs, path) -> whether it drew one)
    ("report_bound_vs_k.png", "Test bound vs K", plot_bound_vs_k),
    ("report_curves.png", "Training curves", plot_curves),
    ("report_nll_vs_flow_length.png", "NLL vs flow length", plot_nll_vs_flow_length),
    ("report_sandwich.png", "log p(x): IWAE_K, AIS and the BDMC sandwich", plot_sandwich),
    ("report_gaps.png", "Inference gaps (approximation + amortization)", plot_gaps),
    # sweeps over objective.beta (jaxvae.sweeps.report.beta)
    ("report_rate_distortion.png", "Rate–distortion over beta", beta.plot_rate_distortion),
    ("report_disentanglement.png", "Disentanglement vs beta", beta.plot_disentanglement_vs_beta),
    ("report_traversals.png", "Latent traversals by beta", beta.plot_traversals),
]

COMPARED = [  # (section title, CSV file, build(finished runs) -> (table, CSV rows, note) or None)
    ("Objectives compared", "report_objectives.csv", objectives.objectives_table),  # Rainforth et al. 2018
    ("Gradient SNR against K", "report_snr.csv", objectives.snr_vs_k_table),  # Rainforth et al. 2018, Fig. 4
    ("Posteriors and priors compared", "report_posteriors.csv", posteriors.posteriors_table),
]


@dataclasses.dataclass
class Report:
    root: str
    records: list[RunRecord]
    runs: Table | None
    runs_csv: list[dict]
    seeds: Table | None
    seeds_csv: list[dict]
    problems: Table | None
    plots: list[tuple[str, str]]  # (file name, title)
    papers: list = dataclasses.field(default_factory=list)  # jaxvae.sweeps.report.paper_tables sections
    # the settings compared (jaxvae.sweeps.report.objectives / .posteriors): (title, CSV file name, table,
    # CSV rows, note) of each that applies to the runs
    compared: list = dataclasses.field(default_factory=list)

    def markdown(self) -> str:
        finished = [r for r in self.records if r.finished]
        out = [f"# Report: {self.root}", "",
               f"{len(finished)} finished run(s), {len(self.records) - len(finished)} unfinished or failed."]
        if self.runs is not None and self.runs.note:
            out += ["", self.runs.note + " (every finished run; the tables show the settings that differ)."]
        if self.runs is not None:
            out += ["", "## Runs", "", self.runs.markdown()]
        if self.seeds is not None:
            out += ["", "## Mean ± std over seeds", "",
                    "Runs whose configs differ only by seed; sample standard deviation (n − 1).", "",
                    self.seeds.markdown()]
        for title, _, table, _, note in self.compared:
            out += ["", f"## {title}", "", note, "", table.markdown()]
        if self.papers:
            out += ["", paper_tables.markdown(self.papers).rstrip()]
        if self.problems is not None:
            out += ["", "## Unfinished and failed runs", "", self.problems.markdown()]
        if self.plots:
            out += ["", "## Plots", ""] + [f"![{title}]({name})" for name, title in self.plots]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        """report.html: the same sections, the pictures embedded (jaxvae.sweeps.report.html_page)."""
        return html_page(self.root, self.records, self.runs, self.seeds, self.papers, self.problems, self.plots,
                         [(title, table, note) for title, _, table, _, note in self.compared])


def build_report(root: str, plots: bool = True, out_dir: str | None = None) -> Report:
    out_dir = out_dir or root
    records = load_runs(root)
    finished = [r for r in records if r.finished]
    runs, runs_csv = runs_table(finished) if finished else (None, [])
    seeds = seeds_table(finished) if finished else None
    seeds_tab, seeds_csv = seeds if seeds is not None else (None, [])
    made = []
    if plots and finished:
        os.makedirs(out_dir, exist_ok=True)
        for name, title, fn in PLOTS:
            path = os.path.join(out_dir, name)
            if fn(finished, path):
                made.append((name, title))
            elif os.path.exists(path):
                os.remove(path)  # stale picture of an earlier report
        made += snr_figures(finished, out_dir)
    papers = paper_tables.paper_tables([r.results for r in finished])  # published values beside ours (papers/*.json)
    compared = []
    for title, csv_name, build in COMPARED:
        section = build(finished)
        if section is not None:
            compared.append((title, csv_name, *section))
    return Report(out_dir, records, runs, runs_csv, seeds_tab, seeds_csv, problems_table(records), made, papers,
                  compared)


def write_report(root: str, plots: bool = True, out_dir: str | None = None, verbose: bool = True) -> str:
    """Build the report of every run under root, write its files (into out_dir, default root) and
    return the markdown."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no folder {root!r}")
    rep = build_report(root, plots=plots, out_dir=out_dir)
    out = out_dir or root
    os.makedirs(out, exist_ok=True)
    text = rep.markdown()
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    write_csv(os.path.join(out, "report.csv"), rep.runs_csv)
    written = {csv_name: rows for _, csv_name, _, rows, _ in rep.compared}
    for _, csv_name, _ in COMPARED:
        path = os.path.join(out, csv_name)
        if csv_name in written:
            write_csv(path, written[csv_name])
        elif os.path.exists(path):
            os.remove(path)  # stale table of an earlier report
    seeds_csv = os.path.join(out, "report_seeds.csv")
    if rep.seeds_csv:
        write_csv(seeds_csv, rep.seeds_csv)
    elif os.path.exists(seeds_csv):
        os.remove(seeds_csv)
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(rep.html())
    if verbose:
        files = ["report.md", "report.csv"] + (["report_seeds.csv"] if rep.seeds_csv else [])
        files += [csv_name for _, csv_name, _, _, _ in rep.compared]
        files += [n for n, _ in rep.plots] + ["report.html"]
        print(f"wrote {', '.join(os.path.join(out, f) for f in files)}", file=sys.stderr)
    return text
