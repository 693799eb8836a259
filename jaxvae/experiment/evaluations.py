"""The final evaluation of a run as a list of registered evaluations (big_vision's ``evaluators``).

Each evaluation is a small unit (``Evaluation``): ``applies(config, model)`` says whether it runs for a run,
``run(ctx) -> dict`` computes its results.json entry from an ``EvalContext`` (the run's config, model,
parameters, data and the test examples; ``ctx.test`` holds what the evaluations before it put into
results.json's "test"), and ``summary_lines(results)`` gives the lines the run prints at the end. Solo
runs, vectorized group members and ``jaxvae.load_run(...).evaluate()`` all run ``evaluations_for(config,
model)``. A researcher adds one with ``register_evaluation`` (docs/extending.md)::

    class MeanPixel(Evaluation):
        name = "mean_pixel"
        def run(self, ctx):
            return {"mean_pixel": float(ctx.x.mean())}
        def summary_lines(self, results):
            return [("test mean pixel", results["test"]["mean_pixel"])]

    register_evaluation(MeanPixel())

Every evaluation draws from its own fixed PRNG key (the run's seed plus an offset), so the order of the
list does not change any number.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.experiment.building import is_linear_gaussian
from jaxvae.experiment.eval_driver import evaluate_split, weight_health_lines
from jaxvae.experiment.sandwich import evaluate_sandwich
from jaxvae.experiment.factor_eval import factor_metrics, rate_distortion, sample_quality
from jaxvae.experiment.imaging import bits_per_dim_results
from jaxvae.vae.evaluation import linear_gaussian_log_px


# -- which examples, which keys -------------------------------------------------------------------------
def subset(x, labels, size: int):
    """A fixed random subset of ``size`` examples (all when size is 0): splits are often ordered (the
    binarized MNIST test set's first 1000 images have mean pixel 0.170 against 0.133 overall), so a
    prefix would be biased."""
    if not size or size >= len(x):
        return x, labels
    keep = np.sort(np.random.default_rng(0).choice(len(x), size, replace=False))
    return x[keep], (labels[keep] if labels is not None else None)


def eval_binarize_seed(config) -> int:
    """Seed of the fixed binarization of the test set (data.binarize=dynamic): eval.binarize_seed when
    >= 0 (one draw for every run, as the IWAE paper's fixed test set), else the run's seed + 2."""
    fixed = int(config.eval.get("binarize_seed", -1))
    return fixed if fixed >= 0 else config.seed + 2


def valid_eval_spec(config, dataset) -> tuple[np.ndarray, jax.Array, dict]:
    """The validation evaluation of a run: (examples, PRNG key, evaluate_split's keyword arguments)."""
    x, _ = subset(dataset.valid, None, config.eval.valid_examples)
    return x, jax.random.key(config.seed + 1), dict(
        ks=(config.eval.valid_k,), batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size,
        binarize=config.data.binarize, seed=config.seed + 1, surgery=False)


def final_eval_spec(config, dataset) -> tuple[np.ndarray, np.ndarray | None, jax.Array, dict]:
    """The test evaluation of a run: (examples, their labels, PRNG key, evaluate_split's keyword arguments)."""
    x, labels = subset(dataset.test, dataset.test_labels, config.eval.max_examples)
    return x, labels, jax.random.key(config.seed + 2), dict(
        ks=tuple(config.eval.ks), batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size,
        surgery_samples=config.eval.surgery_samples, binarize=config.data.binarize,
        seed=eval_binarize_seed(config))


def validate(config, model, params, dataset, mesh=None) -> dict:
    """The validation bound (``valid_eval_spec``) of ``params``."""
    x, key, kw = valid_eval_spec(config, dataset)
    return evaluate_split(model, params, x, key, mesh=mesh, **kw)


# -- the contract ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalContext:
    """What an evaluation sees: the run and its test examples (``final_eval_spec``). ``test`` is
    results.json's "test" entry as built so far; ``bounds`` the test bounds when they were already computed
    (a vectorized group evaluates its members' bounds together)."""

    config: Any
    model: Any
    params: Any
    dataset: Any
    workdir: Path | None
    x: np.ndarray
    labels: np.ndarray | None
    key: jax.Array
    bound_kwargs: dict
    mesh: Any = None
    bounds: dict | None = None
    test: dict = dataclasses.field(default_factory=dict)


class Evaluation:
    """One evaluation of a trained run. ``name``: its registry name. ``entry``: where ``run``'s dict goes:
    "test" (merged into results.json's "test") or the name of a top-level results.json key. ``writes_files``:
    it writes into the workdir (``load_run(...).evaluate()`` leaves such evaluations out)."""

    name: str = ""
    entry: str = "test"
    writes_files: bool = False

    def applies(self, config, model) -> bool:
        """Whether this evaluation runs for this run (e.g. only when its eval.* settings switch it on)."""
        return True

    def run(self, ctx: EvalContext) -> Any:
        """Its results.json entry (a dict merged into "test" when ``entry`` is "test")."""
        raise NotImplementedError

    def summary_lines(self, results: dict) -> list:
        """Lines of the printed summary: (label, value) pairs (aligned into the table) or plain strings."""
        return []


EVALUATIONS: dict[str, Evaluation] = {}


def register_evaluation(evaluation: Evaluation, *, replace: bool = False) -> Evaluation:
    """Adds ``evaluation`` to the list every run evaluates with (in registration order)."""
    name = evaluation.name
    if not name:
        raise ValueError(f"{type(evaluation).__name__} has no name: set the class attribute name = '...'")
    if name in EVALUATIONS and not replace:
        raise ValueError(f"an evaluation named {name!r} is already registered (pass replace=True)")
    EVALUATIONS[name] = evaluation
    return evaluation


def evaluations_for(config, model, *, files: bool = True) -> list[Evaluation]:
    """The registered evaluations that apply to this run, in order (without those writing files when
    ``files`` is False)."""
    return [e for e in EVALUATIONS.values() if e.applies(config, model) and (files or not e.writes_files)]


def _mean_se(entry: dict, key: str) -> str:
    se = entry.get(f"{key}_stderr")
    return f"{entry[key]:.3f}" + (f" ± {se:.3f}" if se is not None else "")


# -- the built-in evaluations ---------------------------------------------------------------------------
class Bounds(Evaluation):
    """ELBO, IWAE_K for every eval.ks K, the NLL estimate -IWAE_Kmax, active units, ELBO surgery and the
    importance weights' health (ESS/K, PSIS k-hat): ``eval_driver.evaluate_split``."""

    name = "bounds"

    def run(self, ctx):
        if ctx.bounds is not None:
            return dict(ctx.bounds)
        return evaluate_split(ctx.model, ctx.params, ctx.x, ctx.key, mesh=ctx.mesh, **ctx.bound_kwargs)

    def summary_lines(self, results):
        t = results["test"]
        rows = [("test ELBO", t["elbo"])] + [(f"test IWAE_{k}", v) for k, v in t["iwae"].items()]
        rows += [(f"NLL estimate (K={t['nll_k']})", t["nll"]), ("active units", t["active_units"])]
        if t.get("mutual_information") is not None:
            rows += [("mutual information I_q(x;z)", t["mutual_information"]),
                     ("marginal KL(q(z)||p(z))", t["marginal_kl"])]
        return rows + weight_health_lines(t)


class ExactLogPx(Evaluation):
    """The exact log p(x) of a linear-Gaussian VAE (``vae.evaluation.linear_gaussian_log_px``): x ~ N(b, W W^T
    + sigma^2 I). None for every other model (the key is always present)."""

    name = "exact_log_px"

    def run(self, ctx):
        if not is_linear_gaussian(ctx.model):
            return {"exact_log_px": None}
        return {"exact_log_px": float(jnp.mean(linear_gaussian_log_px(ctx.model, ctx.params, jnp.asarray(ctx.x))))}

    def summary_lines(self, results):
        v = results["test"].get("exact_log_px")
        return [("exact log p(x)", v)] if v is not None else []


class Sandwich(Evaluation):
    """eval.ais / eval.bdmc / eval.gaps (``sandwich.evaluate_sandwich``): AIS log p(x) against IWAE_Kmax,
    the BDMC interval around log p(x), and the approximation / amortization gap split."""

    name = "sandwich"

    def applies(self, config, model):
        e = config.eval
        return bool(e.ais.examples or e.bdmc.examples or e.gaps.examples)

    def run(self, ctx):
        c = ctx.config
        return evaluate_sandwich(ctx.model, ctx.params, ctx.x, jax.random.key(c.seed + 6), c.eval,
                                 binarize=c.data.binarize, seed=eval_binarize_seed(c))

    def summary_lines(self, results):
        t, rows = results["test"], []
        if t.get("ais"):
            a = t["ais"]
            rows += [(f"AIS log p(x) ({a['examples']} ex., T={a['num_steps']})", _mean_se(a, "log_px")),
                     (f"  AIS - IWAE_{a['iwae_k']} (same examples)", _mean_se(a, "ais_minus_iwae"))]
        if t.get("bdmc"):
            b = t["bdmc"]
            rows += [(f"BDMC interval ({b['examples']} simulated ex.)", f"[{b['lower']:.3f}, {b['upper']:.3f}]"),
                     ("  BDMC width (upper - lower)", _mean_se(b, "width"))]
        if t.get("gaps"):
            g = t["gaps"]
            rows += [(f"approximation gap ({g['examples']} ex., {g['log_px_estimator']})",
                      _mean_se(g, "approximation_gap")),
                     ("amortization gap", _mean_se(g, "amortization_gap"))]
        return rows


class RateDistortion(Evaluation):
    """Rate (the KL term) and distortion (minus the reconstruction term) of the test ELBO."""

    name = "rate_distortion"

    def run(self, ctx):
        return rate_distortion(ctx.test)


class FactorMetrics(Evaluation):
    """MIG and DCI of the encoder means, on data with known generative factors (factors_toy, dSprites)."""

    name = "factor_metrics"

    def run(self, ctx):
        factors = subset(ctx.dataset.test, getattr(ctx.dataset, "test_factors", None),
                         ctx.config.eval.max_examples)[1]
        return factor_metrics(ctx.model, ctx.params, ctx.x, factors, getattr(ctx.dataset, "factor_names", None))


class SampleQuality(Evaluation):
    """How far the decoder's samples fall from the data manifold (factors_toy only)."""

    name = "sample_quality"

    def applies(self, config, model):
        return config.data.name == "factors_toy"

    def run(self, ctx):
        return sample_quality(ctx.model, ctx.params, jax.random.key(ctx.config.seed + 4), ctx.config.data.name)


class BitsPerDim(Evaluation):
    """bits/dim = -log p(x) / (D ln 2) from the NLL estimate and the ELBO (``imaging.bits_per_dim_results``)."""

    name = "bits_per_dim"

    def run(self, ctx):
        return bits_per_dim_results(ctx.config, ctx.model, ctx.dataset, ctx.test)

    def summary_lines(self, results):
        t = results["test"]
        if str(t.get("bits_per_dim_convention", "")).startswith("8-bit"):
            return [("bits/dim (NLL estimate)", t["bits_per_dim"])]
        return []


class TrainSet(Evaluation):
    """The bounds on ``eval.train_examples`` training examples (binarized once, with the test seed + 1), for
    the train/test gap: results.json's "train_set"."""

    name = "train_set"
    entry = "train_set"

    def applies(self, config, model):
        return bool(int(config.eval.get("train_examples", 0)))

    def run(self, ctx):
        c = ctx.config
        x, _ = subset(ctx.dataset.train, None, int(c.eval.train_examples))
        res = evaluate_split(ctx.model, ctx.params, x, jax.random.key(c.seed + 5), ks=tuple(c.eval.ks),
                             batch_size=c.eval.batch_size, chunk_size=c.eval.chunk_size,
                             binarize=c.data.binarize, seed=eval_binarize_seed(c) + 1, surgery=False)
        res.pop("seconds", None)
        return res


class Pictures(Evaluation):
    """Reconstructions, samples, latent traversals and the like (``pictures.write_pictures``), when
    eval.images is on: results.json's "pictures" (file names in the workdir)."""

    name = "pictures"
    entry = "pictures"
    writes_files = True

    def applies(self, config, model):
        return bool(config.eval.images)

    def run(self, ctx):
        if jax.process_index() != 0 or ctx.workdir is None:
            return []
        from jaxvae.experiment.pictures import write_pictures  # matplotlib: only when pictures are written

        paths = write_pictures(ctx.model, ctx.params, str(ctx.workdir), jax.random.key(ctx.config.seed + 3),
                               x_test=np.asarray(ctx.x), image_shape=ctx.dataset.image_shape, labels=ctx.labels)
        return [os.path.basename(p) for p in paths]


for _evaluation in (Bounds(), ExactLogPx(), Sandwich(), RateDistortion(), FactorMetrics(), SampleQuality(),
                    BitsPerDim(), TrainSet(), Pictures()):
    register_evaluation(_evaluation)


# -- running them ---------------------------------------------------------------------------------------
def run_evaluations(config, model, params, dataset, workdir: Path | None, *, bounds: dict | None = None,
                    mesh=None, evaluations: list[Evaluation] | None = None) -> tuple[dict, dict]:
    """(results.json's "test" entry, the other entries by name) from ``evaluations`` (default: those that
    apply). "test" keeps the bounds' wall time under "seconds"."""
    x, labels, key, kw = final_eval_spec(config, dataset)
    ctx = EvalContext(config, model, params, dataset, workdir, x, labels, key, kw, mesh=mesh, bounds=bounds)
    other = {}
    for ev in evaluations if evaluations is not None else evaluations_for(config, model):
        out = ev.run(ctx)
        if ev.entry == "test":
            ctx.test.update(out)
        else:
            other[ev.entry] = out
    return ctx.test, other


def final_results(config, model, params, dataset, workdir: Path, *, bounds: dict | None = None,
                  mesh=None) -> dict:
    """results.json (less "valid" and "train"): every evaluation that applies (``evaluations_for``);
    ``bounds``: the test bounds when already computed (evaluate_split's dict)."""
    test, other = run_evaluations(config, model, params, dataset, workdir, bounds=bounds, mesh=mesh)
    eval_seconds = test.pop("seconds", None)
    return {
        "name": config.name,
        "workdir": str(workdir),
        "status": "finished",
        "config": config.to_dict(),
        "summary": {
            "dataset": config.data.name, "objective": config.objective.name, "k": config.objective.k,
            "flow": config.model.flow, "flow_length": config.model.flow_length,
            "beta": config.objective.beta, "seed": config.seed, "latent_dim": config.model.latent_dim,
        },
        "test": test,
        "train_set": other.pop("train_set", None),
        "eval_wall_time_s": eval_seconds,
        "pictures": other.pop("pictures", []),
        "curves": "metrics.jsonl",
        "devices": [str(d) for d in jax.devices()],
        **other,
    }


def format_results(r: dict) -> str:
    """The printed summary: every evaluation's lines (those that ran, i.e. left entries in ``r``), then the
    training time; (label, value) rows aligned into one table."""
    items = []
    for ev in EVALUATIONS.values():
        try:
            items += ev.summary_lines(r)
        except (KeyError, TypeError):  # an evaluation that did not run for this run
            continue
    tr = r.get("train") or {}
    items += [("train wall time (s)", tr.get("wall_time_s")), ("train examples/s", tr.get("examples_per_s"))]
    rows = [i for i in items if isinstance(i, tuple)]
    width = max(len(name) for name, _ in rows)
    lines = [f"results for {r['workdir']} ({r['test']['num_examples']} test examples)"]
    for item in items:
        if isinstance(item, tuple):
            name, v = item
            shown = f"{v:.3f}" if isinstance(v, float) else str(v)
            lines.append(f"  {name:<{width}}  {shown:>12}")
    lines += [i for i in items if not isinstance(i, tuple)]
    return "\n".join(lines)
