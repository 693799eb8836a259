"""The report's command line, ``python -m jaxvae.sweeps.report RUNS_DIR [flags]``: argument parsing and
``main``. By default it writes the whole report (``write_report``) and prints its markdown; two flags
print one part alone and write no file: ``--alignment`` (the factor alignment tables of a beta sweep) and
``--paper-tables`` (our numbers beside the published ones, with ``--assume FIELD=VALUE``).

Imports only the standard library and the report's other modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jaxvae.sweeps.report.beta import alignment_summary, alignment_table
from jaxvae.sweeps.report.build import write_report
from jaxvae.sweeps.report.loading import load_runs
from jaxvae.sweeps.report.paper_tables import markdown as paper_tables_markdown
from jaxvae.sweeps.report.paper_tables import paper_tables

DESCRIPTION = ("Compare the runs of a sweep: tables (markdown, CSV, HTML) and plots of bounds vs K and "
               "training curves.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxvae.sweeps.report", description=DESCRIPTION)
    p.add_argument("root", help="folder holding run workdirs (searched recursively), e.g. runs/iwae_mnist")
    p.add_argument("--out", default=None, help="where to write report.* (default: ROOT)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--quiet", action="store_true", help="don't print the markdown")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--alignment", action="store_true",
                      help="print only the per-run factor alignment table (which latent carries which factor) "
                           "and its summary over seeds; write no file")
    only.add_argument("--paper-tables", action="store_true",
                      help="print only the finished runs laid out like the published tables in "
                           "jaxvae/sweeps/papers/; write no file")
    p.add_argument("--assume", action="append", default=[], metavar="FIELD=VALUE",
                   help="with --paper-tables: match as if every run had this config value (anchors from "
                        "another setting)")
    return p


def parse_assume(items: Sequence[str]) -> dict:
    """``["data.name=mnist", "model.stochastic_layers=1"]`` as {field: value}, values read as JSON when
    they parse (numbers, booleans), else as text."""
    assume = {}
    for item in items:
        field, _, value = item.partition("=")
        try:
            assume[field] = json.loads(value)
        except ValueError:
            assume[field] = value
    return assume


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.assume and not args.paper_tables:
        p.error("--assume goes with --paper-tables")
    if args.alignment:
        runs = [r for r in load_runs(args.root) if r.finished]
        print(alignment_table(runs))
        print()
        print(alignment_summary(runs))
        return 0
    if args.paper_tables:
        runs = [r.results for r in load_runs(args.root) if r.finished]
        sys.stdout.write(paper_tables_markdown(paper_tables(runs, parse_assume(args.assume)))
                         or "no finished run matches a published table\n")
        return 0
    try:
        text = write_report(args.root, plots=not args.no_plots, out_dir=args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        sys.stdout.write(text)
    return 0
