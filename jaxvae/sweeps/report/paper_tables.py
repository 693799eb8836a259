"""Paper tables: a sweep laid out like a published table, our numbers beside the paper's.

Published values live in ``jaxvae/sweeps/papers/<short_name>.json``, one file per paper table (the report
reads every file there)::

    {"paper": "Burda, Grosse & Salakhutdinov 2015", "table": "Table 1", "metric": "nll",
     "metric_label": "test NLL (nats)", "note": "dynamically binarized MNIST",
     "rows": [{"label": "MNIST, 1 layer, IWAE, k=5", "row": "MNIST, 1 layer, k=5", "column": "IWAE",
               "match": {"data.name": "mnist", "objective.name": "iwae", "objective.k": 5,
                         "model.stochastic_layers": 1}, "value": 85.54}]}

``match`` lists config fields (dotted paths) a run must have for the row to apply (a field missing from an
older run's config counts as its default in jaxvae.experiment.configs). ``metric`` is one of
``METRIC_PATHS`` or a dotted path into results.json. ``row`` and ``column`` (optional) place the value in
a grid as in the paper (Burda et al.'s Table 1: rows dataset x layers x k, columns VAE / IWAE); without
them the rows are listed in file order. Put in only numbers seen in the paper or in a source that quotes it
(the ``note`` names the source, the data, the architecture and the budget); never invent one.

For each paper table with at least one matching finished run, ``paper_tables(runs)`` gives (1) the grid:
ours as mean ± std over seeds, the published value and the difference (ours - published), then our
active units; (2) a detail list per row: seeds, ours, published, difference, train-set value and the
train/test gap (when results.json has ``train_set``), active units per stochastic layer.

    python -m jaxvae.sweeps.report RUNS_DIR --paper-tables [--assume data.name=mnist --assume data.binarize=dynamic]

prints the tables alone; ``--assume field=value`` (``paper_tables(runs, assume)``) matches as if every run
had that config value (e.g. to set runs on statically binarized MNIST beside the dynamically binarized
published figures, as anchors: say so wherever the numbers are quoted).

Imports only the standard library and the report's loading and tables (``jaxvae.experiment.validation``
lazily, for the config defaults).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxvae.sweeps.report.loading import lookup
from jaxvae.sweeps.report.tables import Table

PAPERS_DIR = Path(__file__).resolve().parent.parent / "papers"  # jaxvae/sweeps/papers
METRIC_PATHS = {"nll": "test.nll", "elbo": "test.elbo", "active_units": "test.active_units"}
LOWER_IS_BETTER = {"nll"}


class PaperFileError(ValueError):
    """A file in jaxvae/sweeps/papers/ is not in the documented format (the message names it)."""


@dataclasses.dataclass
class PaperTable:
    file: str
    paper: str
    table: str
    metric: str
    metric_label: str
    note: str
    rows: list[dict]

    @property
    def title(self) -> str:
        return f"{self.paper}, {self.table}: {self.metric_label}"

    @property
    def grid(self) -> bool:
        return all("row" in r and "column" in r for r in self.rows)


def load_paper_tables(folder: str | Path = PAPERS_DIR) -> list[PaperTable]:
    """Every ``*.json`` in ``folder``, checked; PaperFileError naming the file for a malformed one."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PaperFileError(f"{path}: not readable JSON ({e})") from None
        problems = [f"no {k!r}" for k in ("paper", "table", "metric", "rows") if k not in doc]
        rows = doc.get("rows") if isinstance(doc.get("rows"), list) else []
        for i, r in enumerate(rows):
            if not (isinstance(r, dict) and isinstance(r.get("label"), str) and isinstance(r.get("match"), dict)
                    and isinstance(r.get("value"), (int, float)) and not isinstance(r.get("value"), bool)):
                problems.append(f"rows[{i}] needs a label (text), a match (object) and a value (number)")
        if problems:
            raise PaperFileError(f"{path}: {'; '.join(problems)} (format: jaxvae/sweeps/report/paper_tables.py)")
        out.append(PaperTable(path.name, doc["paper"], doc["table"], doc["metric"],
                              doc.get("metric_label", doc["metric"]), doc.get("note", ""), rows))
    return out


# -- matching runs ------------------------------------------------------------------------------------
_MISSING = object()


def _defaults() -> dict:
    """{dotted field: default} of jaxvae.experiment.configs; imported lazily, when the paper tables are
    built, so that importing the report stays light (the configs pull in ml_collections)."""
    try:
        from jaxvae.experiment.validation import known_fields  # noqa: PLC0415 - lazy, for import speed

        return known_fields()
    except Exception:  # noqa: BLE001 - without the defaults a missing field simply does not match
        return {}


def _config_value(results: dict, field: str, defaults: dict) -> Any:
    node = results.get("config") or {}
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return defaults.get(field, _MISSING)
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def matches(results: dict, match: dict, assume: dict | None = None, defaults: dict | None = None) -> bool:
    """Whether the run's config has every ``match`` field (``assume``: values taken instead of the run's)."""
    defaults = _defaults() if defaults is None else defaults
    assume = assume or {}
    return all(_same(assume[f] if f in assume else _config_value(results, f, defaults), v)
               for f, v in match.items())


def _seed_key(results: dict) -> str:
    """Runs with equal keys differ only by seed."""
    def flat(d, prefix=""):
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" not in ("seed", "name", "train.init_from"):
                yield f"{prefix}{k}", repr(v)
    return json.dumps(sorted(flat(results.get("config") or {})))


# -- numbers ------------------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _mean_std(values) -> tuple[float | None, float | None, int]:
    xs = [x for x in map(_num, values) if x is not None]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return m, s, len(xs)


def _fmt(mean, std=None, decimals=2) -> str:
    if mean is None:
        return ""
    out = f"{mean:.{decimals}f}"
    return out + (f" ± {std:.{decimals}f}" if std is not None else "")


@dataclasses.dataclass
class Line:
    """Our runs for one published row (one group of seeds)."""

    entry: dict
    runs: list  # results dicts
    ours: tuple  # (mean, std, n)
    train: tuple  # train-set value (mean, std, n)
    active_units: tuple  # (mean, std, n) of the total
    active_per_layer: list  # mean per layer

    @property
    def published(self) -> float:
        return float(self.entry["value"])

    @property
    def diff(self) -> float | None:
        return None if self.ours[0] is None else self.ours[0] - self.published


def _metric_path(metric: str) -> str:
    return METRIC_PATHS.get(metric, metric)


def _lines(table: PaperTable, runs: Sequence[dict], assume: dict, defaults: dict) -> list[Line]:
    path = _metric_path(table.metric)
    train_path = "train_set." + path.split(".", 1)[1] if path.startswith("test.") else None
    out = []
    for entry in table.rows:
        hits = [r for r in runs if matches(r, entry["match"], assume, defaults)]
        groups: dict[str, list] = {}
        for r in hits:
            groups.setdefault(_seed_key(r), []).append(r)
        for g in groups.values():
            layers = [lookup(r, "test.active_units_per_layer") for r in g]
            per_layer = []
            if layers and all(isinstance(x, list) for x in layers) and len({len(x) for x in layers}) == 1:
                per_layer = [sum(x[i] for x in layers) / len(layers) for i in range(len(layers[0]))]
            out.append(Line(entry, g, _mean_std(lookup(r, path) for r in g),
                            _mean_std(lookup(r, train_path) for r in g) if train_path else (None, None, 0),
                            _mean_std(lookup(r, "test.active_units") for r in g), per_layer))
    return out


def _au(line: Line) -> str:
    mean = line.active_units[0]
    if mean is None:
        return ""
    text = f"{mean:.1f}".rstrip("0").rstrip(".")
    if len(line.active_per_layer) > 1:
        text += " (" + "+".join(f"{v:.1f}".rstrip("0").rstrip(".") for v in line.active_per_layer) + ")"
    return text


def _signed(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f}"


def paper_tables(runs: Sequence[dict], assume: dict | None = None, folder: str | Path = PAPERS_DIR
                 ) -> list[dict]:
    """For each paper table with matching runs (``runs``: finished runs' results dicts): a dict with
    ``title``, ``note`` and ``tables``: a list of (caption, headers, rows, numeric) tables."""
    defaults = _defaults()
    out = []
    for table in load_paper_tables(folder):
        lines = _lines(table, runs, assume or {}, defaults)
        if not lines:
            continue
        tables = []
        if table.grid:
            row_names = list(dict.fromkeys(r["row"] for r in table.rows))
            cols = list(dict.fromkeys(r["column"] for r in table.rows))
            headers = ["row"] + [f"{c} {h}" for c in cols for h in ("ours", "paper", "diff", "active units")]
            by_cell: dict[tuple, list[Line]] = {}
            for line in lines:
                by_cell.setdefault((line.entry["row"], line.entry["column"]), []).append(line)
            rows = []
            for rn in row_names:
                cells_per_col = [by_cell.get((rn, c), []) for c in cols]
                if not any(cells_per_col):
                    continue
                depth = max(1, max(len(x) for x in cells_per_col))
                for d in range(depth):
                    row = [rn if d == 0 else ""]
                    for c, cell in zip(cols, cells_per_col):
                        published = next((e["value"] for e in table.rows if e.get("row") == rn
                                          and e.get("column") == c), None)
                        if d < len(cell):
                            line = cell[d]
                            row += [_fmt(line.ours[0], line.ours[1]) + (f" (n={line.ours[2]})" if line.ours[2] else ""),
                                    _fmt(line.published), _signed(line.diff), _au(line)]
                        else:
                            row += ["", _fmt(published) if published is not None else "", "", ""]
                    rows.append(row)
            tables.append(("grid", headers, rows, [False] + [True] * (len(headers) - 1)))
        headers = ["published row", "seeds", "ours (mean ± std)", "paper", "ours − paper",
                   "train set (mean)", "train − test", "active units (per layer)"]
        rows = []
        for line in lines:
            gap = None
            if line.train[0] is not None and line.ours[0] is not None:
                gap = line.train[0] - line.ours[0]
            seeds = " ".join(str((r.get("config") or {}).get("seed", "?")) for r in line.runs)
            rows.append([line.entry["label"], seeds, _fmt(line.ours[0], line.ours[1]), _fmt(line.published),
                         _signed(line.diff), _fmt(line.train[0]), _signed(gap), _au(line)])
        tables.append(("detail", headers, rows, [False, False] + [True] * 6))
        note = table.note
        if assume:
            note += (f" Matched assuming {', '.join(f'{k}={v}' for k, v in assume.items())} for every run: the "
                     "published values are anchors from another setting, not like-for-like.")
        better = ("lower is better; " if table.metric in LOWER_IS_BETTER else "") + \
            "diff = ours − paper; train − test: the train-set value minus the test value"
        if any(len(line.active_per_layer) > 1 for line in lines):
            better += ("; active units of a deep model, per layer z_1 first, by Cov_x E_q[z_l] > 1e-2: the "
                       "z_1 count is an upper bound, since a z_1 unit whose posterior follows its prior "
                       "p(z_1|z_2) passes it while carrying ~0 nats (docs/iwae_paper.md)")
        out.append({"title": table.title, "file": table.file, "note": f"{note} ({better}.)", "tables": tables})
    return out


def markdown(sections: list[dict]) -> str:
    out = []
    for s in sections:
        out += [f"## {s['title']}", "", f"From jaxvae/sweeps/papers/{s['file']}. {s['note']}", ""]
        for _, headers, rows, numeric in s["tables"]:
            out += [Table(list(headers), [list(r) for r in rows], list(numeric)).markdown(), ""]
    return "\n".join(out)
