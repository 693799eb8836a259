"""The log p(x) sandwich and the diagnostics of a loaded run, as small result objects, and how a run shows
itself in a notebook: what ``jaxvae.load_run(...)``'s ``ais``, ``bdmc``, ``gaps``, ``weight_health`` and
``snr`` compute and return (``jaxvae.experiment.run.Run``; docs/api.md).

Every result keeps its per-example arrays (numpy), ``mean`` / ``stderr`` of its main quantity (the standard
error of the mean over examples), ``mean_stderr(name)`` for any of its arrays, and ``entry``: the dict that
results.json keeps for it (``test.ais``, ``test.bdmc``, ``test.gaps``; ``test.ess`` and ``test.pareto_k``).
The numbers come from the functions the run's own evaluation calls (``sandwich.sandwich_ais``,
``sandwich_bdmc``, ``sandwich_gaps``, ``per_example_bounds``; ``vae.diagnostics.snr_vs_k``), so with the
run's settings and keys they are results.json's numbers.
"""

from __future__ import annotations

import dataclasses
import html
import json
import types
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxvae.experiment.eval_driver import binarize_eval, per_example_bounds, weight_health
from jaxvae.experiment.sandwich import (GAP_TERMS, iwae_examples, mean_stderr, sandwich_ais, sandwich_bdmc,
                                        sandwich_gaps)
from jaxvae.experiment.evaluations import final_eval_spec
from jaxvae.vae import diagnostics

__all__ = ["AISEstimate", "BDMCInterval", "InferenceGaps", "WeightHealth", "GradientSNR", "sandwich_keys",
           "eval_examples", "run_ais", "run_bdmc", "run_gaps", "run_weight_health", "run_snr", "run_text",
           "run_html"]

# The key of the run's sandwich evaluation (``evaluations.Sandwich``: jax.random.key(config.seed + 6)), split
# in 6 as ``sandwich.evaluate_sandwich`` splits it: AIS, its IWAE, BDMC, its IWAE, the gaps' IWAE, the gaps.
SANDWICH_SEED_OFFSET = 6
DEFAULT_EXAMPLES = 100  # examples of ais/gaps (simulated ones of bdmc) when the config has the part off
SNR_ESTIMATORS = ("iwae", "iwae_dreg", "miwae", "piwae", "ciwae", "rws")  # python -m jaxvae.diagnose's defaults
SNR_KS = (1, 4, 16, 64, 256)


# -- result objects --------------------------------------------------------------------------------------
class _Result:
    """Shared by the results: ``mean`` / ``stderr`` of the main per-example array, ``mean_stderr(name)``."""

    main = ""

    def mean_stderr(self, name: str | None = None) -> tuple[float, float]:
        """(mean, standard error) over examples of the per-example array ``name`` (default: the main one)."""
        return mean_stderr(getattr(self, name or self.main))

    @property
    def mean(self) -> float:
        return self.mean_stderr()[0]

    @property
    def stderr(self) -> float:
        return self.mean_stderr()[1]

    @property
    def num_examples(self) -> int:
        return len(getattr(self, self.main))

    def _pm(self, name: str | None = None) -> str:
        m, se = self.mean_stderr(name)
        return f"{m:.3f} ± {se:.3f}"


@dataclasses.dataclass(frozen=True, repr=False)
class AISEstimate(_Result):
    """AIS log p(x) per example (a stochastic lower bound, tight as T grows) and IWAE_iwae_k on the same
    examples. ``mean``/``stderr``: of ``log_px``; ``mean_stderr("difference")``: AIS - IWAE."""

    log_px: np.ndarray  # (n,) log (1/C) sum_c w_c per example
    iwae: np.ndarray  # (n,) IWAE_iwae_k on the same examples
    iwae_k: int
    acceptance: np.ndarray  # (n,) mean HMC acceptance (second half of the transitions)
    divergences: np.ndarray  # (n,) divergent HMC proposals
    log_w: np.ndarray  # (n, chains) per-chain log weights
    entry: dict  # results.json's test.ais form
    main = "log_px"

    @property
    def difference(self) -> np.ndarray:
        """AIS - IWAE_iwae_k per example: how far the IWAE bound sits below the AIS estimate."""
        return self.log_px - self.iwae

    def __repr__(self):
        e = self.entry
        return (f"AISEstimate({self.num_examples} examples, T={e['num_steps']}, {e['chains']} chains, init "
                f"{e['init']}): log p(x) = {self._pm()}; AIS - IWAE_{self.iwae_k} = {self._pm('difference')}; "
                f"acceptance {e['acceptance']:.2f}")


@dataclasses.dataclass(frozen=True, repr=False)
class BDMCInterval(_Result):
    """BDMC on examples simulated from the model: forward AIS (``lower``, a stochastic lower bound) and reverse
    AIS from the exact posterior sample (``upper``, a stochastic upper bound) of each example's log p(x).
    ``mean``/``stderr``: of the width upper - lower (it shrinks to 0 as T grows)."""

    x: np.ndarray  # (n, x_dim) the simulated examples
    lower: np.ndarray  # (n,)
    upper: np.ndarray  # (n,)
    iwae: np.ndarray  # (n,) IWAE_iwae_k of the simulated examples
    iwae_k: int
    entry: dict  # results.json's test.bdmc form
    main = "width"

    @property
    def width(self) -> np.ndarray:
        return self.upper - self.lower

    def __repr__(self):
        e = self.entry
        return (f"BDMCInterval({self.num_examples} simulated examples, T={e['num_steps']}, {e['chains']} chains): "
                f"[{e['lower']:.3f}, {e['upper']:.3f}], width {self._pm()}; IWAE_{self.iwae_k} {e['iwae']:.3f}")


@dataclasses.dataclass(frozen=True, repr=False)
class InferenceGaps(_Result):
    """The inference gap log p(x) - ELBO[q_phi(z|x)] per example split (Cremer et al. 2018) into the
    approximation gap log p(x) - ELBO[q*] (q* the best member of q's family, optimised per example) and the
    amortization gap ELBO[q*] - ELBO[q_phi]. ``mean``/``stderr``: of ``inference_gap``."""

    log_px: np.ndarray
    elbo_amortized: np.ndarray
    elbo_optimal: np.ndarray
    approximation_gap: np.ndarray
    amortization_gap: np.ndarray
    inference_gap: np.ndarray
    steps: np.ndarray  # optimisation steps of q* (per batch, repeated per example)
    converged: np.ndarray
    estimator: str  # what log_px is: ais_T<steps> | iwae_<K> | given
    entry: dict  # results.json's test.gaps form
    main = "inference_gap"

    def __repr__(self):
        return (f"InferenceGaps({self.num_examples} examples, log p(x) from {self.estimator}): inference gap "
                f"{self._pm()} = approximation {self._pm('approximation_gap')} + amortization "
                f"{self._pm('amortization_gap')}")


@dataclasses.dataclass(frozen=True, repr=False)
class WeightHealth(_Result):
    """The importance weights of IWAE_k per example: ESS/K = (sum w)^2 / (K sum w^2) in (0, 1] and the PSIS
    Pareto k-hat of their upper tail (> 0.7: heavy-tailed, the IWAE_k estimate is unreliable; None when
    k < 21). ``mean``/``stderr``: of ``ess``; ``ess_by_k``: ESS/K for every K that was drawn."""

    k: int
    ess: np.ndarray  # (n,) ESS/K at K = k
    khat: np.ndarray | None  # (n,) k-hat at K = k
    iwae: np.ndarray  # (n,) IWAE_k
    ess_by_k: dict  # {K: (n,) ESS/K}
    entry: dict  # results.json's test "ess" and "pareto_k" form
    main = "ess"

    @property
    def frac_above_0_7(self) -> float | None:
        return None if self.khat is None else float(np.mean(self.khat > diagnostics.PARETO_K_WARN))

    def __repr__(self):
        tail = "k-hat n/a (K < 21)" if self.khat is None else (
            f"k-hat mean {np.mean(self.khat):.2f}, max {np.max(self.khat):.2f}, "
            f"{100 * self.frac_above_0_7:.0f}% above 0.7")
        return f"WeightHealth({self.num_examples} examples, K={self.k}): ESS/K {self._pm()}; {tail}"


@dataclasses.dataclass(frozen=True, repr=False)
class GradientSNR:
    """Gradient signal-to-noise ratio per estimator and K (Rainforth et al. 2018; ``diagnostics.snr_vs_k``):
    ``table[estimator]`` is a list of rows {"k", "options", "encoder": summary, "decoder": summary} whose
    summaries are over the network's parameters (``diagnostics.snr_summary``). ``curve`` gives one line."""

    ks: tuple
    estimators: tuple
    table: dict
    num_draws: int
    batch_size: int

    def curve(self, estimator: str, network: str = "encoder", stat: str = "snr_debiased_mean"
              ) -> tuple[np.ndarray, np.ndarray]:
        """(K, stat) of one estimator for one network (encoder | decoder), e.g. for a log-log plot."""
        rows = [r for r in self.table[estimator] if network in r]
        return (np.array([r["k"] for r in rows]),
                np.array([np.nan if r[network][stat] is None else r[network][stat] for r in rows], float))

    def __repr__(self):
        lines = [f"GradientSNR(R={self.num_draws} draws, batch {self.batch_size}; debiased mean SNR encoder/decoder)"]
        for name in self.estimators:
            cells = "  ".join(f"K={k}: {e:.3g}/{d:.3g}" for k, e, d in zip(
                self.curve(name)[0], self.curve(name)[1], self.curve(name, "decoder")[1]))
            lines.append(f"  {name:<10} {cells}")
        return "\n".join(lines)


# -- computing them for a run ----------------------------------------------------------------------------
def _key(key) -> jax.Array:
    return jax.random.key(key) if isinstance(key, (int, np.integer)) else key


def sandwich_keys(config, key=None) -> jax.Array:
    """The 6 keys of the sandwich (``evaluate_sandwich``'s layout) from ``key``; None: the run's own."""
    return jax.random.split(jax.random.key(config.seed + SANDWICH_SEED_OFFSET) if key is None else _key(key), 6)


def eval_examples(run) -> np.ndarray:
    """The run's test examples as its final evaluation scored them: ``final_eval_spec``'s examples, binarized
    once with the evaluation's seed when data.binarize is dynamic."""
    x, _, _, kw = final_eval_spec(run.config, run.dataset)
    return binarize_eval(np.asarray(x, np.float32), kw["binarize"], kw["seed"])


def _settings(section, **overrides) -> types.SimpleNamespace:
    """An eval.* section with the given (non-None) overrides."""
    return types.SimpleNamespace(**{**section.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


def _sizes(config, iwae_k=None) -> dict:
    return dict(iwae_k=int(iwae_k or max(int(k) for k in config.eval.ks)), batch_size=config.eval.batch_size,
                chunk_size=config.eval.chunk_size)


def _examples(run, x, n: int) -> np.ndarray:
    return np.asarray(eval_examples(run)[:n] if x is None else x, np.float32)


def run_ais(run, x=None, *, key=None, iwae_k=None, **overrides) -> AISEstimate:
    cfg = _settings(run.config.eval.ais, **overrides)
    x = _examples(run, x, run.config.eval.ais.examples or DEFAULT_EXAMPLES)
    keys = sandwich_keys(run.config, key)
    entry, per = sandwich_ais(run.model, run.params, x, keys[0], keys[1], cfg, **_sizes(run.config, iwae_k))
    return AISEstimate(per["log_px"], per["iwae"], entry["iwae_k"], per["acceptance"], per["divergences"],
                       per["log_w"], entry)


def run_bdmc(run, n=None, *, key=None, iwae_k=None, batch_size=None, leapfrog_steps=None, **overrides) -> BDMCInterval:
    ev = run.config.eval
    cfg_b = _settings(ev.bdmc, examples=n or ev.bdmc.examples or DEFAULT_EXAMPLES, **overrides)
    cfg_a = _settings(ev.ais, batch_size=batch_size, leapfrog_steps=leapfrog_steps)
    keys = sandwich_keys(run.config, key)
    entry, per = sandwich_bdmc(run.model, run.params, keys[2], keys[3], cfg_b, cfg_a, **_sizes(run.config, iwae_k))
    return BDMCInterval(per["x"], per["lower"], per["upper"], per["iwae"], entry["iwae_k"], entry)


def run_gaps(run, x=None, *, log_px=None, key=None, iwae_k=None, **overrides) -> InferenceGaps:
    ev = run.config.eval
    cfg = _settings(ev.gaps, **overrides)
    x = _examples(run, x, ev.gaps.examples or DEFAULT_EXAMPLES)
    keys = sandwich_keys(run.config, key)
    sizes = _sizes(run.config, iwae_k)
    if log_px is None and ev.ais.examples >= len(x):  # as the run's evaluation: AIS when it covers them
        log_px = run_ais(run, x, key=key, iwae_k=iwae_k)
    if isinstance(log_px, AISEstimate):
        if len(log_px.log_px) < len(x):
            raise ValueError(f"the AIS estimate covers {len(log_px.log_px)} examples, the gaps need {len(x)}")
        values, estimator = log_px.log_px[:len(x)], f"ais_T{log_px.entry['num_steps']}"
    elif log_px is None or (isinstance(log_px, str) and log_px == "iwae"):
        values = iwae_examples(run.model, run.params, x, keys[4], sizes["iwae_k"], sizes["batch_size"],
                               sizes["chunk_size"])
        estimator = f"iwae_{sizes['iwae_k']}"
    else:
        values, estimator = np.asarray(log_px, np.float32), "given"
    entry, g = sandwich_gaps(run.model, run.params, x, values, estimator, keys[5], cfg)
    return InferenceGaps(*(g[k] for k in GAP_TERMS), g["steps"], g["converged"], estimator, entry)


def run_weight_health(run, x=None, k=None, *, key=None) -> WeightHealth:
    ev = run.config.eval
    ks = tuple(sorted({int(v) for v in ev.ks})) if k is None else (int(k),)
    k = ks[-1]
    if key is None:
        key = final_eval_spec(run.config, run.dataset)[2]
    x = eval_examples(run) if x is None else np.asarray(x, np.float32)
    per = per_example_bounds(run.model, run.params, x, _key(key), ks=ks, batch_size=ev.batch_size,
                             chunk_size=ev.chunk_size)
    ess = {kk: per[f"ess_{kk}"] for kk in ks}
    khat = per.get("khat")
    entry = weight_health({str(kk): [v] for kk, v in ess.items()}, [khat] if khat is not None else [], k)
    return WeightHealth(k, ess[k], khat, per[f"iwae_{k}"], ess, entry)


def run_snr(run, x=None, ks: Sequence[int] = SNR_KS, estimators: Sequence[str] = SNR_ESTIMATORS, *,
            num_draws: int = 100, m: int = 4, beta_ciwae: float = 0.5, chunk: int | None = 4, batch: int = 20,
            key=0) -> GradientSNR:
    if x is None:  # python -m jaxvae.diagnose's batch: the first test examples, binarized with the seed
        seed = int(key) if isinstance(key, (int, np.integer)) else 0
        x = binarize_eval(np.asarray(run.test_data()[:batch], np.float32), run.config.data.binarize, seed)
    x = jax.numpy.asarray(np.asarray(x, np.float32))
    table = diagnostics.snr_vs_k(run.model, run.params, x, _key(key), tuple(int(k) for k in ks), tuple(estimators),
                                 num_draws, m, beta_ciwae, chunk)
    return GradientSNR(tuple(int(k) for k in ks), tuple(estimators), table, int(num_draws), int(x.shape[0]))


# -- how a run shows itself ------------------------------------------------------------------------------
def _status(workdir: Path, results: dict | None) -> str:
    if results is not None:
        return str(results.get("status", "finished"))
    path = workdir / "status.json"
    try:
        return str(json.loads(path.read_text()).get("status", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def _describe_model(config) -> str:
    m = config.model
    if m.get("stochastic_layers", 1) > 1:
        body = f"{m.stochastic_layers}-layer, latents {tuple(m.latent_dims)}"
    elif m.get("network", "mlp") != "mlp":
        body = f"{m.network}, latent {m.latent_dim}"
    else:
        body = f"MLP {tuple(m.encoder_hidden)} / {tuple(m.decoder_hidden)}, latent {m.latent_dim}"
    extra = [m.likelihood] + ([f"prior {m.prior}"] if m.prior != "standard_normal" else [])
    extra += [f"flow {m.flow} x{m.flow_length}"] if m.flow != "none" else []
    return f"{body}, {', '.join(extra)}"


def _describe_objective(config) -> str:
    o = config.objective
    out = f"{o.name}, K={o.k}"
    return out + (f", beta={o.beta}" if float(o.get("beta", 1.0)) != 1.0 else "")


def _test_rows(test: dict) -> list[tuple[str, str]]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [("ELBO", fmt(test["elbo"]))] + [(f"IWAE_{k}", fmt(v)) for k, v in test.get("iwae", {}).items()]
    rows += [(f"NLL (K={test.get('nll_k')})", fmt(test.get("nll"))), ("active units", fmt(test.get("active_units")))]
    if test.get("ais"):
        a = test["ais"]
        rows.append((f"AIS log p(x) ({a['examples']} ex., T={a['num_steps']})",
                     f"{a['log_px']:.3f} ± {a['log_px_stderr']:.3f}"))
    if test.get("bdmc"):
        b = test["bdmc"]
        rows.append((f"BDMC interval ({b['examples']} sim. ex.)", f"[{b['lower']:.3f}, {b['upper']:.3f}]"))
    if test.get("gaps"):
        g = test["gaps"]
        rows += [("approximation gap", fmt(g["approximation_gap"])), ("amortization gap", fmt(g["amortization_gap"]))]
    return rows


def _header(run) -> list[tuple[str, str]]:
    results = run.results()
    return [("run", f"{run.config.name} ({run.workdir})"), ("model", _describe_model(run.config)),
            ("objective", _describe_objective(run.config)),
            ("status", f"{_status(Path(run.workdir), results)}; step {run.step} ({run.checkpoint} checkpoint)")]


def _test(run) -> dict:
    results = run.results()
    return (results or {}).get("test") or {}


def run_text(run) -> str:
    """A plain description: name, model, objective, status, and the test numbers of results.json."""
    lines = [f"Run {run.config.name!r} at {run.workdir}"] + [f"  {k}: {v}" for k, v in _header(run)[1:]]
    rows = _test_rows(_test(run)) if _test(run) else []
    if rows:
        width = max(len(k) for k, _ in rows)
        lines += ["  test:"] + [f"    {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def run_html(run) -> str:
    """The same as a small HTML table (``Run._repr_html_``): a row per field, then one per test number."""
    esc = html.escape
    cells = [f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>{esc(v)}</td></tr>"
             for k, v in _header(run)]
    test = _test(run)
    if test:
        title = f"test ({test.get('num_examples')} examples)"
        cells.append(f"<tr><th colspan='2' style='text-align:left'>{esc(title)}</th></tr>")
        cells += [f"<tr><td style='text-align:left'>{esc(k)}</td><td style='text-align:right'>{esc(v)}</td></tr>"
                  for k, v in _test_rows(test)]
    return f"<table class='jaxvae-run'>{''.join(cells)}</table>"
