"""report.html: one self-contained page with the report's tables, the paper tables and the pictures
(read from the output folder and embedded as base64 PNGs). The runs and seeds tables sort, filter and
hide columns with the page's own inline script (``jaxvae.sweeps.report.html_table``); without JavaScript
they are plain tables.

Imports only the standard library and the report's ``tables`` and ``html_table``.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence

from jaxvae.sweeps.report import html_table
from jaxvae.sweeps.report.tables import Table

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:100%}"
         "table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}"
         "th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f3f3f3}"
         "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
         "td.txt{overflow-wrap:anywhere}img{max-width:100%}" + html_table.STYLE)


def html_page(root: str, records: Sequence, runs: Table | None, seeds: Table | None, papers: Sequence[dict],
              problems: Table | None, plots: Sequence[tuple[str, str]], compared: Sequence[tuple] = ()) -> str:
    """The page of a report (the fields of jaxvae.sweeps.report.build.Report): ``records`` every
    RunRecord, ``papers`` the paper-table sections, ``plots`` (file name relative to ``root``, title),
    ``compared`` the settings-compared sections (title, table, note)."""
    finished = sum(r.finished for r in records)
    parts = [f"<h1>Report: {html.escape(root)}</h1>",
             f"<p>{finished} finished run(s), {len(records) - finished} unfinished or failed.</p>"]
    if runs is not None:
        parts += ["<h2>Runs</h2>"]
        if runs.note:
            parts += [f'<p class="common">{html.escape(runs.note)}</p>']
        parts += [html_table.interactive_table(runs, "t-runs")]
    if seeds is not None:
        parts += ["<h2>Mean ± std over seeds</h2>",
                  "<p>Runs whose configs differ only by seed; sample standard deviation (n − 1).</p>",
                  html_table.interactive_table(seeds, "t-seeds")]
    for i, (title, table, note) in enumerate(compared):
        parts += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(note)}</p>",
                  html_table.interactive_table(table, f"t-compared-{i}")]
    for sec in papers:
        parts += [f"<h2>{html.escape(sec['title'])}</h2>", f"<p>{html.escape(sec['note'])}</p>"]
        parts += [Table(list(h), [list(r) for r in rows], list(n)).html() for _, h, rows, n in sec["tables"]]
    if problems is not None:
        parts += ["<h2>Unfinished and failed runs</h2>", problems.html()]
    for name, title in plots:
        with open(os.path.join(root, name), "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts += [f"<h2>{html.escape(title)}</h2>",
                  f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">']
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>Report: {html.escape(root)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + f"\n<script>{html_table.SCRIPT}</script>\n</body></html>\n")
