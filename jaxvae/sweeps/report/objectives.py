"""The objectives compared, as in Rainforth et al. 2018 ("Tighter variational bounds are not necessarily
better", Table 1 and Fig. 4): finished runs that differ only in the objective (``OBJECTIVE_FIELDS``; the
seeds of one objective pooled) as one row per objective, with

* log p(x) estimated by the test IWAE_Kmax (the largest K of ``eval.ks``; NLL = -IWAE_Kmax);
* the test ELBO, and IWAE at the training budget M x K when ``eval.ks`` has it;
* the inference network's gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) (exact for the true log p(x); with
  IWAE_Kmax for log p(x) it is a lower estimate, too small by the IWAE_Kmax bias), per seed, then averaged;
* the gradient SNR of the encoder and the decoder for the run's own estimator at its training budget,
  read from ``snr_<checkpoint>.json`` that ``python -m jaxvae.diagnose`` wrote into the run folder (the
  debiased mean over parameters, ``diagnose.PLOTTED``; ``best`` checkpoint preferred);
* the passes over the training set, the test examples, the wall time;
* a published value of a paper table (``jaxvae/sweeps/papers/*.json``) whose row names the same objective
  settings, when the data or budget differ from ours: set beside ours as an anchor, with the paper's note.

A second table (``snr_vs_k_table``, "Gradient SNR against K") gives, for the same groups, every estimator
that diagnose ran on each objective's trained models at every K: Rainforth et al.'s Fig. 4 (the encoder's
SNR falls with K, the decoder's rises) and Tucker et al. 2018's DReG beside IWAE.

Cells are mean ± sample std over seeds (n - 1); ``(n=..)`` marks a cell that not every seed has. Imports only
the standard library and the report's ``loading``, ``tables`` and ``paper_tables``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from jaxvae.sweeps.report import paper_tables
from jaxvae.sweeps.report.loading import RunRecord, flatten, fmt_value, lookup, mean_std, number, read_json
from jaxvae.sweeps.report.tables import Table, group_key

OBJECTIVE_FIELDS = ("objective.name", "objective.m", "objective.k", "objective.beta_ciwae")
IGNORED_FIELDS = {"seed", "name"}  # differ between rows without making them another experiment
SNR_FILES = ("snr_best.json", "snr_latest.json")
SNR_STAT = "snr_debiased_mean"  # jaxvae.diagnose.PLOTTED


def objective_label(config: dict) -> str:
    """How the papers write an objective: IWAE(64), MIWAE(8, 8), CIWAE(0.5) with K=64, VAE (64 samples)."""
    c = flatten(config)
    name, m, k = c.get("objective.name"), c.get("objective.m", 1) or 1, c.get("objective.k", 1)
    labels = {"iwae": f"IWAE({k})", "iwae_dreg": f"IWAE-DReG({k})", "iwae_stl": f"IWAE-STL({k})",
              "miwae": f"MIWAE({m}, {k})", "piwae": f"PIWAE({m}, {k})", "rws": f"RWS({k})",
              "rws_dreg": f"RWS-DReG({k})",
              "ciwae": f"CIWAE({c.get('objective.beta_ciwae')}), K={k}",
              "elbo": f"VAE ({m * k} samples)" if m * k > 1 else "VAE"}
    return labels.get(name, f"{name}(M={m}, K={k})")


def _config(run: RunRecord) -> dict:
    return {k: v for k, v in flatten(run.results.get("config") or {}).items() if k not in IGNORED_FIELDS}


def groups_differing_only_in(runs: Sequence[RunRecord], allowed) -> list[list[RunRecord]] | None:
    """The runs grouped by config minus the seed, when the groups (2 or more) differ only in fields for which
    ``allowed(field)`` holds; else None."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        if isinstance(r.results.get("config"), dict):
            groups.setdefault(group_key(r), []).append(r)
    if len(groups) < 2:
        return None
    configs = [_config(g[0]) for g in groups.values()]
    keys = set().union(*configs)
    differing = {k for k in keys if len({repr(c.get(k)) for c in configs}) > 1}
    if not differing or not all(allowed(k) for k in differing):
        return None
    return list(groups.values())


def objective_groups(runs: Sequence[RunRecord]) -> list[list[RunRecord]] | None:
    """The finished runs grouped by objective (the seeds of one pooled), in the sweep's order; None unless
    they form 2 or more groups that differ in the objective only (``OBJECTIVE_FIELDS``)."""
    groups = groups_differing_only_in([r for r in runs if r.finished], lambda f: f in OBJECTIVE_FIELDS)
    if groups is not None:
        sort_groups(groups)
    return groups


def sort_groups(groups: list[list[RunRecord]]) -> None:
    """In the sweep's declared order when every run has its place in it, else by run folder name."""
    groups.sort(key=lambda g: (0, min(r.order for r in g)) if all(r.order for r in g) else (1, g[0].name))


def training_samples(results: dict) -> int:
    c = results.get("config") or {}
    o = c.get("objective") or {}
    return int(o.get("m", 1) or 1) * int(o.get("k", 1) or 1)


def _snr_file(path: str) -> dict[str, dict[int, tuple[float | None, float | None]]]:
    """estimator -> {samples per example: (encoder, decoder) SNR} in one of diagnose's JSON files ({} when
    the file is missing or holds none)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("snr"), dict):
        return {}
    return {est: {row["k"]: (number((row.get("encoder") or {}).get(SNR_STAT)),
                             number((row.get("decoder") or {}).get(SNR_STAT)))
                  for row in rows if isinstance(row, dict) and isinstance(row.get("k"), int)}
            for est, rows in data["snr"].items() if isinstance(rows, list)}


def snr(run: RunRecord) -> tuple[float | None, float | None]:
    """(encoder, decoder) SNR of the run's own estimator at its training budget, from diagnose's JSON."""
    name = lookup(run.results, "config.objective.name")
    k = training_samples(run.results)
    for fname in SNR_FILES:
        found = _snr_file(os.path.join(run.path, fname)).get(name, {}).get(k)
        if found is not None:
            return found
    return None, None


def largest_k(results: dict) -> int | None:
    """The largest K of the run's test IWAE_K bounds (None without any)."""
    return max((int(k) for k in lookup(results, "test.iwae") or {} if str(k).isdigit()), default=None)


def log_px(results: dict) -> float | None:
    """log p(x) estimated by the test IWAE_Kmax."""
    k = largest_k(results)
    return number(lookup(results, "test.iwae")[str(k)]) if k is not None else None


def cell(values: Sequence[Any], decimals: int = 2) -> tuple[str, float | None]:
    """``mean ± std`` (no ``± 0.00`` where the seeds agree to the printed digits: the passes, the test
    examples, a vectorized group's wall time) and ``(n=..)`` where not every seed has a value; with the
    mean."""
    mean, std, n = mean_std(values)
    text = fmt_value(mean, decimals)
    std_text = fmt_value(std, max(decimals, 2)) if std else ""
    if text and std_text and float(std_text) != 0:
        text += f" ± {std_text}"
    if text and n != len(values):
        text += f" (n={n})"
    return text, mean


def snr_cell(values: Sequence[float | None]) -> tuple[str, float | None]:
    mean, std, n = mean_std(values)
    if mean is None:
        return "", None
    text = f"{mean:.3g}" + (f" ± {std:.2g}" if std else "")  # no "± 0" where the seeds agree
    return text + (f" (n={n})" if n != len(values) else ""), mean


def published(results: dict, tables: Sequence[paper_tables.PaperTable]) -> str:
    """Published NLLs of paper rows that name this run's objective settings but other data or budget."""
    cells = []
    for t in tables:
        if t.metric != "nll":
            continue
        for row in t.rows:
            match = row["match"]
            objective = {k: v for k, v in match.items() if k.startswith("objective.")}
            if not objective or "objective.name" not in objective:
                continue
            if paper_tables.matches(results, match):
                continue  # same data and budget: the paper tables section compares them directly
            if paper_tables.matches(results, objective):
                cells.append(f"{row['value']:.2f} ({t.paper.split(',')[0]} {t.paper[-4:]})")
    return "; ".join(cells)


def objectives_table(runs: Sequence[RunRecord], papers_folder=paper_tables.PAPERS_DIR
                     ) -> tuple[Table, list[dict], str] | None:
    """(table, CSV rows, note) of the objectives compared; None unless the finished runs form 2 or more
    groups that differ in the objective only."""
    groups = objective_groups(runs)
    if groups is None:
        return None
    tables = paper_tables.load_paper_tables(papers_folder)
    headers = ["objective", "seeds", "log p(x)", "test ELBO", "IWAE (training K)", "KL gap log p(x) - ELBO",
               "SNR encoder", "SNR decoder", "passes", "test examples", "wall time (h)",
               "published NLL (other data or budget)"]
    numeric = [False] + [True] * 10 + [False]
    rows, keys, csv_rows = [], [], []
    kmax = set()
    for g in groups:
        res = [r.results for r in g]
        lpx = [log_px(r) for r in res]
        elbo = [number(lookup(r, "test.elbo")) for r in res]
        gap = [a - b if a is not None and b is not None else None for a, b in zip(lpx, elbo)]
        train_k = [number((lookup(r, "test.iwae") or {}).get(str(training_samples(r)))) for r in res]
        enc, dec = zip(*(snr(r) for r in g))
        hours = [number(lookup(r, "train.wall_time_s")) for r in res]
        hours = [h / 3600 if h is not None else None for h in hours]
        cells = [cell(lpx), cell(elbo), cell(train_k), cell(gap), snr_cell(enc), snr_cell(dec),
                 cell([lookup(r, "train.epochs") for r in res], 1), cell([lookup(r, "test.num_examples")
                                                                           for r in res], 0), cell(hours, 2)]
        label = objective_label(res[0]["config"])
        pub = published(res[0], tables)
        rows.append([label, str(len(g))] + [c[0] for c in cells] + [pub])
        keys.append([None, len(g)] + [c[1] for c in cells] + [None])
        csv_rows.append({"objective": label, "seeds": len(g), **{
            h: c[1] for h, c in zip(headers[2:-1], cells)}, "published_nll": pub})
        kmax |= {largest_k(r) for r in res}
    kmax.discard(None)
    note = (f"log p(x) = test IWAE_{'/'.join(str(k) for k in sorted(kmax))}; KL gap = log p(x) - ELBO per seed "
            "(a lower estimate of KL(q || p(z|x)): IWAE_K is below log p(x)); SNR: `python -m jaxvae.diagnose` "
            "on the best checkpoint, the run's own estimator at its training budget (debiased mean over "
            "parameters; blank where diagnose has not run). Published values: another binarization and "
            "budget where the data differ, anchors only.")
    return Table(headers, rows, numeric, None, None, keys, None, note), csv_rows, note


ESTIMATOR_LABELS = {"elbo": "ELBO", "iwae": "IWAE", "iwae_dreg": "IWAE-DReG", "iwae_stl": "IWAE-STL",
                    "miwae": "MIWAE", "piwae": "PIWAE", "ciwae": "CIWAE", "rws": "RWS", "rws_dreg": "RWS-DReG"}


def snr_by_estimator(run: RunRecord) -> dict[str, dict[int, tuple[float | None, float | None]]]:
    """estimator -> {samples per example: (encoder, decoder) SNR} of every estimator diagnose ran on the
    run (its first SNR file of ``SNR_FILES`` that holds any); {} where diagnose has not run."""
    for fname in SNR_FILES:
        found = _snr_file(os.path.join(run.path, fname))
        if found:
            return found
    return {}


def snr_vs_k_table(runs: Sequence[RunRecord]) -> tuple[Table, list[dict], str] | None:
    """(table, CSV rows, note): the gradient SNR of each estimator diagnose ran on each objective's trained
    models, against the samples per example (Rainforth et al. 2018, Fig. 4; Tucker et al. 2018 for DReG):
    one row per (objective, estimator), encoder and decoder columns per K, mean ± std over seeds. None
    unless the runs form the objectives table's groups and some were diagnosed."""
    groups = objective_groups(runs)
    if groups is None:
        return None
    per_group = [[snr_by_estimator(r) for r in g] for g in groups]
    ks = sorted({k for g in per_group for run in g for rows in run.values() for k in rows})
    if not ks:
        return None
    headers = (["objective", "estimator", "seeds"] + [f"encoder K={k}" for k in ks]
               + [f"decoder K={k}" for k in ks])
    rows, keys, csv_rows = [], [], []
    for g, snrs in zip(groups, per_group):
        label = objective_label(g[0].results["config"])
        seeds = len(g)  # "(n=..)" marks a cell that not every seed has
        estimators = list(dict.fromkeys(e for run in snrs for e in run))  # diagnose's order: own first
        for est in estimators:
            cells = [snr_cell([run.get(est, {}).get(k, (None, None))[part] for run in snrs])
                     for part in (0, 1) for k in ks]
            name = ESTIMATOR_LABELS.get(est, est)
            rows.append([label, name, str(seeds)] + [c[0] for c in cells])
            keys.append([None, None, seeds] + [c[1] for c in cells])
            csv_rows.append({"objective": label, "estimator": est, "seeds": seeds,
                             **{h: c[1] for h, c in zip(headers[3:], cells)}})
    note = ("`python -m jaxvae.diagnose <run> --ks ... --estimators ...` on each run's best checkpoint: the "
            "debiased mean over parameters of the gradient SNR, mean ± std over seeds ((n=..): the seeds "
            "diagnosed where not all were); K = "
            "samples per example (MIWAE/PIWAE: min(M, K) groups of K / min(M, K)). Each row is one "
            "estimator's gradient on one objective's trained models.")
    return Table(headers, rows, [False, False] + [True] * (1 + 2 * len(ks)), None, None, keys, None, note), \
        csv_rows, note
