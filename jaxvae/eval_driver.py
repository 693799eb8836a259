"""Evaluate a trained VAE on every example of a split: ELBO, IWAE_K for several K, active units,
ELBO surgery. Batches are padded and masked, so each example counts exactly once.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import evaluation
from jaxvae.data import eval_batches
from jaxvae.model import VAE, Params
from jaxvae.objectives import elbo_terms
from jaxvae.parallel import replicated, shard_batch


def _binarize_eval(x: np.ndarray, binarize: str, seed: int) -> np.ndarray:
    """Dynamic binarization at test time: one fixed Bernoulli draw of the test set (as in the IWAE code)."""
    if binarize != "dynamic":
        return x
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def _batch_bounds_impl(model: VAE, params: Params, x: jax.Array, key: jax.Array, ks: tuple[int, ...],
                  chunk_size: int, mesh=None):
    """Per-example ELBO terms, IWAE_K for each K in ks, and the posterior means of one batch
    (split over the mesh's data axis when there is one)."""
    x = shard_batch(x, mesh)
    k_elbo, k_iwae = jax.random.split(key)
    out = elbo_terms(model, params, x, k_elbo, num_samples=1)
    post = model.encode(params, x)
    for i, k in enumerate(ks):
        out[f"iwae_{k}"] = evaluation.iwae_bound_chunked(
            model, params, x, jax.random.fold_in(k_iwae, i), k, chunk_size)
    out["mu"] = post.mu
    out["logvar"] = post.logvar
    if mesh is not None and mesh.size > 1:  # replicated outputs can be read on every host
        out = jax.lax.with_sharding_constraint(out, replicated(mesh))
    return out


# On CPU, XLA's own dots and fused reductions beat its YNNPACK library fusions for this program
# (1.2x on top of chunk 100, less memory, identical values: benchmarks/README.md). Experimental flag:
# if this XLA does not know it, the plain jit is used.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_STATIC = (0, 4, 5, 6)
_plain_jit = jax.jit(_batch_bounds_impl, static_argnums=_STATIC)
_cpu_jit = jax.jit(_batch_bounds_impl, static_argnums=_STATIC, compiler_options=_CPU_OPTIONS)
_use_cpu_options = [True]


def _batch_bounds(*args):
    if jax.default_backend() == "cpu" and _use_cpu_options[0]:
        try:
            return _cpu_jit(*args)
        except Exception as e:  # an XLA without the option: fall back once, for good
            if "ynn" not in str(e).lower() and "compile option" not in str(e).lower():
                raise
            _use_cpu_options[0] = False
    return _plain_jit(*args)


def evaluate_split(model: VAE, params: Params, x: np.ndarray, key: jax.Array, *, ks=(1, 5, 50, 5000),
                   batch_size: int = 100, chunk_size: int = 100, surgery_samples: int = 1,
                   binarize: str = "none", seed: int = 0, surgery: bool = True, mesh=None) -> dict:
    """Bounds averaged over all examples of ``x``; the largest K gives the NLL estimate -IWAE_Kmax.

    Returns plain Python floats: elbo, reconstruction, kl, iwae {K: value}, nll, nll_k, active_units,
    ELBO-surgery terms (Gaussian posteriors only), num_examples, seconds.
    """
    t0 = time.time()
    x = _binarize_eval(np.asarray(x, np.float32), binarize, seed)
    ks = tuple(sorted(set(int(k) for k in ks)))
    batch_size = min(batch_size, len(x))
    if mesh is not None and mesh.size > 1:
        batch_size = -(-batch_size // mesh.size) * mesh.size  # padded examples are masked out
    batches, mask = eval_batches(x, batch_size)
    sums: dict[str, float] = {}
    mus, logvars = [], []
    for b in range(batches.shape[0]):
        out = _batch_bounds(model, params, batches[b], jax.random.fold_in(key, b), ks, chunk_size, mesh)
        m = np.asarray(mask[b])
        for name, v in out.items():
            if name in ("mu", "logvar"):
                continue
            sums[name] = sums.get(name, 0.0) + float(np.sum(np.asarray(v, np.float64)[m]))
        mus.append(np.asarray(out["mu"])[m])
        logvars.append(np.asarray(out["logvar"])[m])
    n = int(np.sum(np.asarray(mask)))
    mu = np.concatenate(mus)
    logvar = np.concatenate(logvars)
    means = {k: v / n for k, v in sums.items()}
    result = {
        "elbo": means["elbo"],
        "reconstruction": means["reconstruction"],
        "kl": means["kl"],
        "iwae": {str(k): means[f"iwae_{k}"] for k in ks},
        "nll": -means[f"iwae_{ks[-1]}"],
        "nll_k": ks[-1],
        "active_units": int(evaluation.active_units(jnp.asarray(mu))),
        "num_examples": n,
    }
    if surgery and not model.has_flow:
        s = jax.jit(evaluation.elbo_surgery, static_argnums=(3,))(
            jnp.asarray(mu), jnp.asarray(logvar), jax.random.fold_in(key, 10**6), surgery_samples)
        result.update({k: float(v) for k, v in s.items()})
    else:
        result.update(mutual_information=None, marginal_kl=None, mean_kl=None)
    result["seconds"] = time.time() - t0
    return result
