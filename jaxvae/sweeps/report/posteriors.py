"""The posteriors and priors compared (issue 28; the layout of the flow papers' tables: Rezende & Mohamed
2015, Kingma et al. 2016, van den Berg et al. 2018, Tomczak & Welling 2018): finished runs that differ only
in the posterior (``model.flow*``) or the prior (``model.prior*``), the seeds of one setting pooled, one row
per setting with

* NLL = -IWAE_Kmax (the largest K of ``eval.ks``) and the test ELBO, mean ± sample std over seeds;
* the step cost: milliseconds per training step, the median over the training log's intervals
  (metrics.jsonl's ``examples_per_s`` entries; a median, so that an interval in which the machine was busy
  with something else, or the run was paused, does not move it), and that cost relative to the first row
  (the sweep's first setting: the Gaussian posterior / the standard normal prior in jaxvae's experiments);
  in a vectorized group each run's rate is its share of the group's;
* what the extra cost bought: NLL improvement over the first row per unit of extra relative cost;
* the passes over the training set and the test examples.

Imports only the standard library and the report's ``loading``, ``plots`` (its stdlib curve reader),
``tables`` and ``objectives``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from jaxvae.sweeps.report.loading import RunRecord, flatten, lookup, number
from jaxvae.sweeps.report.objectives import cell, groups_differing_only_in, log_px, sort_groups
from jaxvae.sweeps.report.plots import read_curves
from jaxvae.sweeps.report.tables import Table

PART_PREFIXES = ("model.flow", "model.amortized_flow", "model.prior")


def is_part_field(field: str) -> bool:
    return field.startswith(PART_PREFIXES)


def setting_label(config: dict, name_the_prior: bool = False) -> str:
    """``gaussian``, ``planar L=8``, ``sylvester (triangular) L=4``, then ``vampprior K=500`` when the prior
    is not N(0, I) (and ``N(0, I) prior`` with ``name_the_prior``), joined by ", "."""
    c = flatten(config)
    flow, prior = c.get("model.flow", "none"), c.get("model.prior", "standard_normal")
    if flow in (None, "", "none"):
        post = "gaussian"
    else:
        variant = c.get("model.flow_options.variant") if flow == "sylvester" else None
        post = f"{flow}{f' ({variant})' if variant else ''} L={c.get('model.flow_length')}"
    if prior in (None, "standard_normal"):
        return f"{post}, N(0, I) prior" if name_the_prior else post
    comps = c.get("model.prior_options.components")
    return f"{post}, {prior}{f' K={comps}' if comps else ''}"


def ms_per_step(run: RunRecord) -> float | None:
    """Median over the training log's intervals of batch / examples_per_s, in milliseconds."""
    batch = number(lookup(run.results, "config.train.batch_size"))
    rates = [number(e.get("examples_per_s")) for e in read_curves(run) if e.get("split") == "train"]
    rates = [r for r in rates if r]
    if not batch or not rates:
        return None
    return 1000.0 * batch / statistics.median(rates)


def posteriors_table(runs: Sequence[RunRecord]) -> tuple[Table, list[dict], str] | None:
    """(table, CSV rows, note); None unless the finished runs form 2 or more groups that differ only in the
    posterior or the prior."""
    groups = groups_differing_only_in([r for r in runs if r.finished], is_part_field)
    if groups is None:
        return None
    sort_groups(groups)
    headers = ["posterior / prior", "seeds", "NLL", "test ELBO", "ms per step", "relative step cost",
               "NLL gained per extra cost", "passes", "test examples"]
    numeric = [False] + [True] * 8
    rows, keys, csv_rows = [], [], []
    base_nll = base_cost = None
    priors = {lookup(g[0].results, "config.model.prior") or "standard_normal" for g in groups}
    for i, g in enumerate(groups):
        res = [r.results for r in g]
        nll = [-v if (v := log_px(r)) is not None else None for r in res]
        cost = [ms_per_step(r) for r in g]
        nll_c, elbo_c, cost_c = cell(nll), cell([lookup(r, "test.elbo") for r in res]), cell(cost, 2)
        if i == 0:
            base_nll, base_cost = nll_c[1], cost_c[1]
        rel = cost_c[1] / base_cost if cost_c[1] and base_cost else None
        gain = None
        if i and rel is not None and rel > 1.0 and nll_c[1] is not None and base_nll is not None:
            gain = (base_nll - nll_c[1]) / (rel - 1.0)
        cells = [nll_c, elbo_c, cost_c, (f"{rel:.2f}x" if rel else "", rel),
                 (f"{gain:+.2f} nats" if gain is not None else "", gain),
                 cell([lookup(r, "train.epochs") for r in res], 1),
                 cell([lookup(r, "test.num_examples") for r in res], 0)]
        label = setting_label(res[0]["config"], name_the_prior=len(priors) > 1)
        rows.append([label, str(len(g))] + [c[0] for c in cells])
        keys.append([None, len(g)] + [c[1] for c in cells])
        csv_rows.append({"setting": label, "seeds": len(g), **{h: c[1] for h, c in zip(headers[2:], cells)}})
    note = (f"NLL = -IWAE_Kmax; step cost: the median over the training log's intervals of milliseconds per "
            f"step, relative to the first row ({rows[0][0]}); 'NLL gained per extra cost': nats of NLL below "
            "the first row's per unit of extra relative cost (blank where the cost is not higher). Seeds "
            "pooled: mean ± sample std.")
    return Table(headers, rows, numeric, None, None, keys, None, note), csv_rows, note

