"""The log p(x) sandwich of a run's final evaluation: AIS (a stochastic lower bound that tightens with the
number of annealing steps T), BDMC (simulated data: AIS from below and reverse AIS from above bracket the
true log p(x)) and the inference-gap split (approximation gap log p(x) - ELBO(q*), amortization gap
ELBO(q*) - ELBO(q)), each against IWAE_Kmax on the same examples (``jaxvae.vae.ais``, ``jaxvae.vae.gaps``;
Wu et al. 2017, Grosse et al. 2015, Cremer et al. 2018; docs/ais.md).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxvae.data import eval_batches
from jaxvae.experiment.eval_driver import binarize_eval
from jaxvae.vae import evaluation
from jaxvae.vae.model import VAE, Params


# -- log p(x) sandwich: AIS, BDMC, inference gaps (jaxvae.vae.ais, jaxvae.vae.gaps; docs/ais.md) ------------
# evaluate_sandwich is the three parts below on one key each (``jax.random.split(key, 6)``: AIS, its IWAE,
# BDMC, its IWAE, the gaps' IWAE log p(x), the gaps); ``jaxvae.load_run(...).ais/bdmc/gaps`` call the parts.
_iwae_per_example = jax.jit(evaluation.iwae_bound_chunked, static_argnums=(0, 4, 5))


def iwae_examples(model: VAE, params: Params, x, key: jax.Array, k: int, batch_size: int, chunk_size: int
                  ) -> np.ndarray:
    """Per-example IWAE_k of ``x`` (host array), in padded batches (batch b draws with ``fold_in(key, b)``)."""
    batches, mask = eval_batches(np.asarray(x, np.float32), min(batch_size, len(x)))
    out = [np.asarray(_iwae_per_example(model, params, batches[b], jax.random.fold_in(key, b), k, chunk_size))[
        np.asarray(mask[b])] for b in range(batches.shape[0])]
    return np.concatenate(out)


def mean_stderr(v) -> tuple[float, float]:
    """(mean, standard error of the mean) of per-example values (float64; the error is 0 for one value)."""
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def hmc_options(ais_config) -> dict:
    """The HMC / schedule keywords of ``jaxvae.vae.ais`` from an ``eval.ais``-like config (BDMC uses them too)."""
    return dict(leapfrog_steps=ais_config.leapfrog_steps, schedule_kind=ais_config.schedule,
                step_size=ais_config.step_size, target_accept=ais_config.target_accept,
                adapt_rate=ais_config.adapt_rate)


def sandwich_ais(model: VAE, params: Params, x: np.ndarray, key: jax.Array, iwae_key: jax.Array, ais_config, *,
                 iwae_k: int, batch_size: int, chunk_size: int) -> tuple[dict, dict]:
    """AIS on every example of ``x`` (already binarized) with ``eval.ais``-like settings (their ``examples`` is
    not read), and IWAE_iwae_k on the same examples (``iwae_key``; ``batch_size``, ``chunk_size``: eval's).
    Returns (results.json's "ais" entry, per-example arrays: log_px, iwae, acceptance, step_size,
    divergences, log_w)."""
    from jaxvae.vae import ais as ais_lib

    cfg_a = ais_config
    t0 = time.time()
    r = ais_lib.ais_dataset(model, params, x, key, batch_size=cfg_a.batch_size, num_steps=cfg_a.num_steps,
                            num_chains=cfg_a.chains, init=cfg_a.init, **hmc_options(cfg_a))
    seconds = time.time() - t0
    t0 = time.time()
    iw = iwae_examples(model, params, x, iwae_key, iwae_k, batch_size, chunk_size)
    ais_px = r["log_px"]
    m, se = mean_stderr(ais_px)
    entry = {
        "examples": len(x), "num_steps": cfg_a.num_steps, "chains": cfg_a.chains,
        "leapfrog_steps": cfg_a.leapfrog_steps, "init": cfg_a.init, "log_px": m, "log_px_stderr": se,
        "iwae_k": iwae_k, "iwae": mean_stderr(iw)[0], "ais_minus_iwae": mean_stderr(ais_px - iw)[0],
        "ais_minus_iwae_stderr": mean_stderr(ais_px - iw)[1], "acceptance": float(np.mean(r["acceptance"])),
        "divergent_fraction": float(np.sum(r["divergences"]) / (len(x) * cfg_a.chains
                                                               * max(cfg_a.num_steps - 1, 1))),
        "seconds": seconds, "seconds_iwae": time.time() - t0,
    }
    return entry, {**r, "iwae": iw}


def sandwich_bdmc(model: VAE, params: Params, key: jax.Array, iwae_key: jax.Array, bdmc_config, ais_config, *,
                  iwae_k: int, batch_size: int, chunk_size: int) -> tuple[dict, dict]:
    """BDMC on ``bdmc_config.examples`` examples simulated from the model (T, chains, init: ``bdmc_config``;
    HMC settings and the batch size: ``ais_config``), and IWAE_iwae_k on them (``iwae_key``). Returns
    (results.json's "bdmc" entry, per-example arrays: x, lower, upper, iwae, acceptance_forward,
    acceptance_reverse)."""
    from jaxvae.vae import ais as ais_lib

    cfg_b = bdmc_config
    t0 = time.time()
    r = ais_lib.bdmc(model, params, key, cfg_b.examples, batch_size=ais_config.batch_size,
                     num_steps=cfg_b.num_steps, num_chains=cfg_b.chains, init=cfg_b.init, **hmc_options(ais_config))
    seconds = time.time() - t0
    lo, up = r["lower"]["log_px"], r["upper"]["log_px"]
    iw = iwae_examples(model, params, r["x"], iwae_key, iwae_k, batch_size, chunk_size)
    entry = {
        "examples": cfg_b.examples, "num_steps": cfg_b.num_steps, "chains": cfg_b.chains, "init": cfg_b.init,
        "lower": mean_stderr(lo)[0], "upper": mean_stderr(up)[0], "width": mean_stderr(up - lo)[0],
        "width_stderr": mean_stderr(up - lo)[1], "iwae_k": iwae_k, "iwae": mean_stderr(iw)[0],
        "iwae_below_lower": mean_stderr(lo - iw)[0],  # how far IWAE_k sits below the sandwich
        "acceptance_forward": float(np.mean(r["lower"]["acceptance"])),
        "acceptance_reverse": float(np.mean(r["upper"]["acceptance"])), "seconds": seconds,
    }
    return entry, {"x": r["x"], "lower": lo, "upper": up, "iwae": iw,
                   "acceptance_forward": r["lower"]["acceptance"], "acceptance_reverse": r["upper"]["acceptance"]}


GAP_TERMS = ("log_px", "elbo_amortized", "elbo_optimal", "approximation_gap", "amortization_gap", "inference_gap")


def sandwich_gaps(model: VAE, params: Params, x: np.ndarray, log_px: np.ndarray, estimator: str, key: jax.Array,
                  gaps_config) -> tuple[dict, dict]:
    """The inference-gap split (Cremer et al. 2018) of every example of ``x`` given per-example ``log_px``
    estimates (named ``estimator``), with ``eval.gaps``-like settings (their ``examples`` is not read).
    Returns (results.json's "gaps" entry, per-example arrays: ``GAP_TERMS``, steps, converged)."""
    from jaxvae.vae import gaps as gaps_lib

    cfg_g = gaps_config
    t0 = time.time()
    g = gaps_lib.inference_gaps_dataset(
        model, params, x, log_px, key, batch_size=cfg_g.batch_size, eval_samples=cfg_g.eval_samples,
        num_samples=cfg_g.samples, learning_rate=cfg_g.learning_rate, max_steps=cfg_g.max_steps,
        check_every=cfg_g.check_every, tol=cfg_g.tol)
    entry = {"examples": len(x), "log_px_estimator": estimator,
             **{k: mean_stderr(g[k])[0] for k in GAP_TERMS},
             "approximation_gap_stderr": mean_stderr(g["approximation_gap"])[1],
             "amortization_gap_stderr": mean_stderr(g["amortization_gap"])[1],
             "steps_max": int(np.max(g["steps"])), "converged_fraction": float(np.mean(g["converged"])),
             "seconds": time.time() - t0}
    return entry, g


def evaluate_sandwich(model: VAE, params: Params, x: np.ndarray, key: jax.Array, eval_config, *,
                      binarize: str = "none", seed: int = 0) -> dict:
    """The ``eval.ais`` / ``eval.bdmc`` / ``eval.gaps`` evaluations of one parameter set (each only when its
    ``examples`` > 0) on the first test examples of ``x`` (binarized as ``evaluate_split`` does): results.json
    entries "ais", "bdmc" and "gaps" (means, standard errors over examples, settings and wall times), with
    IWAE at the largest ``eval.ks`` on the same examples for comparison. Empty when all are off."""
    cfg_a, cfg_b, cfg_g = eval_config.ais, eval_config.bdmc, eval_config.gaps
    if not (cfg_a.examples or cfg_b.examples or cfg_g.examples):
        return {}
    x = binarize_eval(np.asarray(x, np.float32), binarize, seed)
    sizes = dict(iwae_k=max(int(k) for k in eval_config.ks), batch_size=eval_config.batch_size,
                 chunk_size=eval_config.chunk_size)
    keys = jax.random.split(key, 6)
    out: dict = {}
    ais_px = None
    if cfg_a.examples:
        out["ais"], per = sandwich_ais(model, params, x[:cfg_a.examples], keys[0], keys[1], cfg_a, **sizes)
        ais_px = per["log_px"]
    if cfg_b.examples:
        out["bdmc"], _ = sandwich_bdmc(model, params, keys[2], keys[3], cfg_b, cfg_a, **sizes)
    if cfg_g.examples:
        xg = x[:cfg_g.examples]
        if ais_px is not None and len(ais_px) >= len(xg):
            log_px, estimator = ais_px[:len(xg)], f"ais_T{cfg_a.num_steps}"
        else:
            log_px = iwae_examples(model, params, xg, keys[4], sizes["iwae_k"], sizes["batch_size"],
                                   sizes["chunk_size"])
            estimator = f"iwae_{sizes['iwae_k']}"
        out["gaps"], _ = sandwich_gaps(model, params, xg, log_px, estimator, keys[5], cfg_g)
    return out
