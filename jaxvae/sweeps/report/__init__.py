"""The sweep report: compare the runs under a folder in tables (markdown, CSV, HTML) and plots of bounds
vs K and training curves.

    python -m jaxvae.sweeps.report runs/iwae_mnist

reads every ``results.json`` under the folder (recursively), prints a markdown table and writes, in that
folder: ``report.md``, ``report.csv`` (one row per run, raw numbers), ``report_seeds.csv`` (mean and std
over seeds, when some configs have several seeds), ``report_objectives.csv`` / ``report_posteriors.csv``
(the objectives, or the posteriors and priors, compared with the seeds pooled, when the runs differ only in
those: ``objectives``, ``posteriors``), ``report_snr.csv`` (the objectives' gradient SNR against K, once
``python -m jaxvae.diagnose`` has run on them), ``report_bound_vs_k.png``, ``report_curves.png``,
``report_nll_vs_flow_length.png`` (only when runs differ in flow length) and ``report.html`` (everything,
the pictures embedded). Unfinished runs (``status.json`` running/preempted, no ``results.json``), failed runs
and planned runs that never started (from ``sweep.json``) are listed in their own section.

The tables have a column per config field that differs between the runs, name each run by those fields
(``2 layers, iwae k=5, seed=1``) and keep the sweep's declared order (its ``sweep.json``); what every run
shares is one "common settings" line. report.html shows those fields and the core numbers (ELBO, IWAE_K,
NLL, active units), the rest behind a "details" toggle, and sorts, filters and hides columns with its own
inline script; report.md and report.csv keep every column. Runs that match a published table
(``jaxvae/sweeps/papers/``) get it beside them, ours / paper / difference.

Missing numbers (absent keys, ``null``) are blank cells. Standard deviations over seeds are sample
standard deviations (n - 1 in the denominator).

The modules, each importing only those above it:

    loading.py       the run folders as RunRecords (load_runs), results.json values (lookup, number,
                     identity, mean_std), cell formatting
    layout.py        a sweep's compact layout: the fields that differ (run names, columns), the common
                     settings line, the row order (the sweep's declared order)
    tables.py        Table (markdown, HTML), the runs / seeds / problems tables and their CSV rows
    plots.py         bound vs K, training curves, NLL vs flow length, AIS/BDMC sandwich, inference gaps
    beta.py          beta sweeps: rate-distortion, disentanglement vs beta, traversals, factor alignment
    paper_tables.py  published values (jaxvae/sweeps/papers/*.json) beside ours
    html_table.py    report.html's runs and seeds tables: sorting, filters and column toggles (inline
                     JavaScript; plain tables without it)
    html_page.py     report.html
    build.py         Report, build_report, write_report (report.md, report.csv, report.html, the plots)
    cli.py           the command line (main); __main__.py runs it

Importing the report needs neither JAX nor matplotlib (matplotlib is imported when a plot is drawn).
"""

from jaxvae.sweeps.report.build import PLOTS, Report, build_report, write_report
from jaxvae.sweeps.report.cli import build_parser, main
from jaxvae.sweeps.report.loading import (IDENTITY, RunRecord, flatten, fmt_id, fmt_value, identity, load_runs, lookup,
                                          mean_std, number, read_json, sort_key)
from jaxvae.sweeps.report.tables import Table, problems_table, runs_table, seeds_table

__all__ = ["PLOTS", "Report", "build_report", "write_report", "build_parser", "main", "IDENTITY", "RunRecord",
           "flatten", "fmt_id", "fmt_value", "identity", "load_runs", "lookup", "mean_std", "number", "read_json",
           "sort_key", "Table", "problems_table", "runs_table", "seeds_table"]
