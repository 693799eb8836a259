"""Evaluate a trained VAE on every example of a split: ELBO, IWAE_K for several K, active units,
ELBO surgery. Batches are padded and masked, so each example counts exactly once.

``evaluate_split`` evaluates one parameter set; ``evaluate_members`` evaluates the stacked parameters of a
vectorized group (``jaxvae.experiment.vectorized``) with one ``jax.vmap``-ped program per batch and returns the same
dicts. Both share the batch program (``_batch_bounds_impl``; jitted: ``batch_bounds``) and the host-side reduction (``_SplitSums``).
``per_example_bounds`` returns the per-example values behind ``evaluate_split``'s means. ``evaluate_sandwich``
(AIS, BDMC, inference gaps) is made of ``sandwich_ais``, ``sandwich_bdmc`` and ``sandwich_gaps``, which
``jaxvae.load_run(...).ais/bdmc/gaps`` call on their own (``jaxvae.experiment.run_diagnostics``).
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.vae import diagnostics, evaluation
from jaxvae.data import eval_batches
from jaxvae.vae.model import VAE, Params
from jaxvae.vae.objectives import elbo_terms
from jaxvae.experiment.parallel import replicated, shard_batch


def binarize_eval(x: np.ndarray, binarize: str, seed: int, dtype=np.float32) -> np.ndarray:
    """Dynamic binarization at test time: one fixed Bernoulli draw of the test set (as in the IWAE code)."""
    if binarize != "dynamic":
        return x
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(dtype)


def _batch_bounds_impl(model: VAE, params: Params, x: jax.Array, key: jax.Array, ks: tuple[int, ...],
                  chunk_size: int, mesh=None):
    """Per-example ELBO terms, IWAE_K for each K in ks, and the posterior means of one batch
    (split over the mesh's data axis when there is one)."""
    x = shard_batch(x, mesh)
    k_elbo, k_iwae = jax.random.split(key)
    out = elbo_terms(model, params, x, k_elbo, num_samples=1)
    post = model.encode(params, x)
    for i, k in enumerate(ks):  # the bound of evaluation.iwae_bound_chunked, with ESS/K and the weights' tail
        tail = diagnostics.psis_tail_length(k) + 1 if k == max(ks) and diagnostics.khat_available(k) else 0
        stats = diagnostics.iwae_weight_stats_chunked(
            model, params, x, jax.random.fold_in(k_iwae, i), k, chunk_size, tail)
        out[f"iwae_{k}"] = stats["bound"]
        out[f"ess_{k}"] = stats["ess"]
        if tail:
            out["top_log_w"] = stats["top_log_w"]
    out["mu"] = _layer_means(model, params, x, post, jax.random.fold_in(key, 7))
    out["logvar"] = post.logvar
    if mesh is not None and mesh.size > 1:  # replicated outputs can be read on every host
        out = jax.lax.with_sharding_constraint(out, replicated(mesh))
    return out


# Draws of the lower layers behind E_q[z_l|x] of a layer l >= 2 (HierarchicalVAE.posterior_means): its
# Monte Carlo error adds ~Var(m_l(z_{l-1}))/100 to Cov_x, far below the 1e-2 active-unit threshold.
LAYER_MEAN_SAMPLES = 100


def _layer_means(model, params, x, post, key):
    """E_q[z|x] per example for active units: the Gaussian mean (an array) for a one-layer VAE, a tuple
    with one entry per stochastic layer for a HierarchicalVAE."""
    if getattr(model, "stochastic_layers", 1) > 1:
        return model.posterior_means(params, x, key, LAYER_MEAN_SAMPLES)
    return post.mu


# On CPU, XLA's own dots and fused reductions beat its YNNPACK library fusions for this program
# (1.2x on top of chunk 100, less memory, identical values: benchmarks/README.md). Experimental flag:
# if this XLA does not know it, the plain jit is used.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_use_cpu_options = [True]


def _cpu_optioned_jit(fn, static_argnums):
    """``jax.jit(fn)``, compiled with ``_CPU_OPTIONS`` on the CPU backend (plain jit if XLA lacks them)."""
    plain = jax.jit(fn, static_argnums=static_argnums)
    cpu = jax.jit(fn, static_argnums=static_argnums, compiler_options=_CPU_OPTIONS)

    def call(*args):
        if jax.default_backend() == "cpu" and _use_cpu_options[0]:
            try:
                return cpu(*args)
            except Exception as e:  # an XLA without the option: fall back once, for good
                if "ynn" not in str(e).lower() and "compile option" not in str(e).lower():
                    raise
                _use_cpu_options[0] = False
        return plain(*args)

    def lower(*args):
        """The ``jax.stages.Lowered`` program that ``call(*args)`` runs (``.compile().memory_analysis()``)."""
        use_cpu = jax.default_backend() == "cpu" and _use_cpu_options[0]
        return (cpu if use_cpu else plain).lower(*args)

    call.lower = lower
    return call


batch_bounds = _cpu_optioned_jit(_batch_bounds_impl, (0, 4, 5, 6))
batch_bounds.__doc__ = (
    """``batch_bounds(model, params, x, key, ks, chunk_size, mesh)``: the jitted per-batch program of
    ``evaluate_split`` (``_batch_bounds_impl``: per-example ELBO terms, IWAE_K for each K in ks, posterior
    means), compiled as ``evaluate_split`` compiles it. ``batch_bounds.lower(...)`` (same arguments) gives
    the lowered program, e.g. for XLA's ``memory_analysis`` of one batch (benchmarks/bench.py).""")


def _members_bounds_impl(model: VAE, params: Params, x: jax.Array, keys: jax.Array, ks: tuple[int, ...],
                         chunk_size: int, mesh, x_axis, b: jax.Array):
    """``_batch_bounds_impl`` vmapped over members: params and keys (``fold_in(keys[i], b)``) have a leading
    member axis; x is shared (``x_axis=None``, (B, D)) or per member (``x_axis=1``, (B, members, D))."""
    batch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, b)
    return jax.vmap(lambda p, xi, k: _batch_bounds_impl(model, p, xi.astype(jnp.float32), k, ks, chunk_size, mesh),
                    in_axes=(0, x_axis, 0))(params, x, batch_keys)


_members_bounds = _cpu_optioned_jit(_members_bounds_impl, (0, 4, 5, 6, 7))
_surgery = jax.jit(evaluation.elbo_surgery, static_argnums=(3,))


def _eval_batch_size(n: int, batch_size: int, mesh) -> int:
    batch_size = min(batch_size, n)
    if mesh is not None and mesh.size > 1:
        batch_size = -(-batch_size // mesh.size) * mesh.size  # padded examples are masked out
    return batch_size


class _SplitSums:
    """Host-side reduction of one split's per-batch outputs for one set of parameters (masked sums of the
    per-example terms, the posterior means), and the final result dict; shared by evaluate_split and
    evaluate_members."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.mus, self.logvars = [], []
        self.ess: dict[str, list] = {}  # per-example ESS/K for each K
        self.khat: list = []  # per-example Pareto k-hat at the largest K

    def add(self, out: dict, m: np.ndarray) -> None:
        """``out``: one batch's host arrays (as ``_batch_bounds_impl`` returns them); ``m``: its mask."""
        for name, v in out.items():
            if name.startswith("ess_"):
                self.ess.setdefault(name[4:], []).append(np.asarray(v, np.float64)[m])
                continue
            if name == "top_log_w":
                self.khat.append(diagnostics.pareto_khat_from_top(np.asarray(v)[m]))
                continue
            if name in ("mu", "logvar"):
                continue
            self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(np.asarray(v, np.float64)[m]))
        self.mus.append(jax.tree.map(lambda a: np.asarray(a)[m], out["mu"]))
        self.logvars.append(np.asarray(out["logvar"])[m])

    def result(self, model: VAE, key: jax.Array, ks: tuple[int, ...], surgery: bool, surgery_samples: int,
               t0: float) -> dict:
        n = sum(len(jax.tree.leaves(mu)[0]) for mu in self.mus)
        layers = [np.concatenate(parts) for parts in zip(*(
            mu if isinstance(mu, tuple) else (mu,) for mu in self.mus))]
        mu = layers[0]
        logvar = np.concatenate(self.logvars)
        per_layer = [int(evaluation.active_units(jnp.asarray(a))) for a in layers]
        means = {k: v / n for k, v in self.sums.items()}
        result = {
            "elbo": means["elbo"],
            "reconstruction": means["reconstruction"],
            "kl": means["kl"],
            "iwae": {str(k): means[f"iwae_{k}"] for k in ks},
            "nll": -means[f"iwae_{ks[-1]}"],
            "nll_k": ks[-1],
            "active_units": sum(per_layer),
            "active_units_per_layer": per_layer,  # z_1 first (Burda et al. 2015 Table 1 lists them per layer)
            "num_examples": n,
        }
        result.update(weight_health(self.ess, self.khat, ks[-1]))
        if (surgery and not model.has_flow and model.prior == "standard_normal"  # Gaussian q, N(0, I) p
                and getattr(model, "stochastic_layers", 1) == 1):
            s = _surgery(jnp.asarray(mu), jnp.asarray(logvar), jax.random.fold_in(key, 10**6), surgery_samples)
            result.update({k: float(v) for k, v in s.items()})
        else:
            result.update(mutual_information=None, marginal_kl=None, mean_kl=None)
        result["seconds"] = time.time() - t0
        return result


def weight_health(ess: dict, khat: list, k_max: int) -> dict:
    """Importance-weight health of a split (jaxvae.vae.diagnostics): ``ess`` {K: {mean, p10}} of the
    per-example ESS/K, and ``pareto_k`` (the PSIS k-hat of each example's K_max weights: mean, median, max,
    the fraction above 0.7) or None when K_max < 21."""
    out = {"ess": {k: {"mean": float(np.mean(np.concatenate(v))), "p10": float(np.percentile(np.concatenate(v), 10))}
                   for k, v in ess.items()}, "pareto_k": None}
    if khat:
        kh = np.concatenate(khat)
        out["pareto_k"] = {"k": int(k_max), "mean": float(np.mean(kh)), "median": float(np.median(kh)),
                           "max": float(np.max(kh)),
                           "frac_above_0_7": float(np.mean(kh > diagnostics.PARETO_K_WARN))}
    return out


def weight_health_lines(test: dict) -> list[str]:
    """Lines for the run log: ESS/K at the largest K, k-hat, and, when more than 5% of the examples have
    k-hat > 0.7 (``diagnostics.PARETO_K_WARN_FRACTION``; k-hat's own noise puts ~2% there by chance), one
    warning that says what it means for the NLL column and what to do.

    Heavy-tailed weights do not make -IWAE_K wrong: it stays an upper bound on the NLL in expectation (IWAE_K
    <= log p(x)); it means the bound may be loose by more than its spread suggests, and that K larger still
    would tighten it slowly. Ordinary MNIST VAEs show this for most test images at K=5000, so the warning
    points to the tool that measures the looseness: AIS (``eval.ais``). When AIS ran, it gives the number."""
    lines = []
    ess = (test.get("ess") or {}).get(str(test.get("nll_k")))
    if ess:
        lines.append(f"  ESS/K at K={test['nll_k']}: mean {ess['mean']:.4f}, 10th percentile {ess['p10']:.4f}")
    pk = test.get("pareto_k")
    if pk:
        lines.append(f"  Pareto k-hat at K={pk['k']}: mean {pk['mean']:.2f}, max {pk['max']:.2f}, "
                     f"{100 * pk['frac_above_0_7']:.1f}% of examples above 0.7")
        if pk["frac_above_0_7"] > diagnostics.PARETO_K_WARN_FRACTION:
            ais = test.get("ais") or {}
            if ais:
                tighter = (f"AIS on {ais['examples']} test examples puts log p(x) "
                           f"{ais['ais_minus_iwae']:.2f} nats above IWAE_{ais['iwae_k']} (the AIS row)")
            else:
                tighter = ("for a tighter estimate of that gap run AIS on some examples: "
                           "--config.eval.ais.examples=100 (docs/ais.md)")
            lines.append(f"warning: Pareto k-hat > 0.7 for {100 * pk['frac_above_0_7']:.1f}% of the test examples "
                         f"(K={pk['k']}): their importance weights are heavy-tailed (Vehtari et al., PSIS), so the "
                         f"NLL column (-IWAE_{pk['k']}) is still an upper bound on the NLL but may be loose by "
                         f"more than its spread suggests; {tighter}")
    return lines


def evaluate_split(model: VAE, params: Params, x: np.ndarray, key: jax.Array, *, ks=(1, 5, 50, 5000),
                   batch_size: int = 100, chunk_size: int = 100, surgery_samples: int = 1,
                   binarize: str = "none", seed: int = 0, surgery: bool = True, mesh=None) -> dict:
    """Bounds averaged over all examples of ``x``; the largest K gives the NLL estimate -IWAE_Kmax.

    Returns plain Python floats: elbo, reconstruction, kl, iwae {K: value}, nll, nll_k, active_units,
    ess {K: {mean, p10}} and pareto_k (``weight_health``), ELBO-surgery terms (Gaussian posteriors only),
    num_examples, seconds.
    """
    t0 = time.time()
    model = model.in_float32()  # bfloat16 matmuls bias the bounds (docs/mixed_precision.md)
    x = binarize_eval(np.asarray(x, np.float32), binarize, seed)
    ks = tuple(sorted(set(int(k) for k in ks)))
    batches, mask = eval_batches(x, _eval_batch_size(len(x), batch_size, mesh))
    acc = _SplitSums()
    for b in range(batches.shape[0]):
        out = batch_bounds(model, params, batches[b], jax.random.fold_in(key, b), ks, chunk_size, mesh)
        acc.add(jax.device_get(out), np.asarray(mask[b]))
    return acc.result(model, key, ks, surgery, surgery_samples, t0)


def per_example_bounds(model: VAE, params: Params, x: np.ndarray, key: jax.Array, *, ks=(1, 5, 50, 5000),
                       batch_size: int = 100, chunk_size: int = 100) -> dict[str, np.ndarray]:
    """What ``evaluate_split`` averages, per example: the same batches, keys and compiled program, so the
    values are those behind its numbers (``x`` already binarized). Keys: elbo, reconstruction, kl, iwae_K and
    ess_K (ESS/K) for each K, and khat (PSIS k-hat at the largest K; absent when it is < 21)."""
    model = model.in_float32()
    ks = tuple(sorted(set(int(k) for k in ks)))
    batches, mask = eval_batches(np.asarray(x, np.float32), _eval_batch_size(len(x), batch_size, None))
    parts: dict[str, list] = {}
    for b in range(batches.shape[0]):
        out = jax.device_get(batch_bounds(model, params, batches[b], jax.random.fold_in(key, b), ks, chunk_size,
                                          None))
        m = np.asarray(mask[b])
        for name, v in out.items():
            if name == "top_log_w":
                parts.setdefault("khat", []).append(diagnostics.pareto_khat_from_top(np.asarray(v)[m]))
            elif name not in ("mu", "logvar"):
                parts.setdefault(name, []).append(np.asarray(v, np.float64)[m])
    return {name: np.concatenate(v) for name, v in parts.items()}


# Members evaluated in one vmapped program at most: its intermediates are members x batch x chunk x
# (hidden or x_dim) floats, so members x batch_size x chunk_size is kept <= 8 x 100 x 100 (the default
# eval.batch_size and eval.chunk_size give slices of 8 members; ~250 MB of intermediates for 784 pixels).
MEMBER_BUDGET = 8 * 100 * 100


def default_max_members(batch_size: int, chunk_size: int) -> int:
    return max(1, MEMBER_BUDGET // max(1, batch_size * chunk_size))


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and np.array_equal(a, b))


def evaluate_members(model: VAE, stacked_params: Params, xs, keys: Sequence[jax.Array], seeds: Sequence[int], *,
                     ks=(1, 5, 50, 5000), batch_size: int = 100, chunk_size: int = 100, surgery_samples: int = 1,
                     binarize: str = "none", surgery: bool = True, mesh=None,
                     max_members: int | None = None) -> list[dict]:
    """``evaluate_split`` for N parameter sets at once: ``[evaluate_split(model, params_i, x_i, keys[i],
    seed=seeds[i], ...) for i in range(N)]`` (the same dicts, to float tolerance: vmapped matmuls may sum in
    another order), computed per batch by one ``jax.vmap`` over the members.

    ``stacked_params``: the members' parameters stacked on a leading axis of size N. ``xs``: one array shared
    by every member, or a sequence of N arrays of one shape (e.g. per-member static binarizations). With
    ``binarize="dynamic"`` each member's test set is drawn with its own seed (shared when the seeds and data
    agree). Members are evaluated in slices of at most ``max_members`` (default ``default_max_members``:
    members x batch_size x chunk_size <= ``MEMBER_BUDGET``) to bound memory; each member's ``seconds`` is
    the wall time of its slice.
    """
    n_members = len(keys)
    model = model.in_float32()  # as evaluate_split
    if len(seeds) != n_members or jax.tree_util.tree_leaves(stacked_params)[0].shape[0] != n_members:
        raise ValueError(f"{n_members} keys, {len(seeds)} seeds and "
                         f"{jax.tree_util.tree_leaves(stacked_params)[0].shape[0]} stacked parameter sets")
    if isinstance(xs, (np.ndarray, jax.Array)):
        xs = [xs] * n_members
    xs = [np.asarray(x, np.float32) for x in xs]
    if len(xs) != n_members or any(x.shape != xs[0].shape for x in xs):
        raise ValueError(f"{len(xs)} data arrays of shapes {sorted({x.shape for x in xs})} for {n_members} members")
    ks = tuple(sorted(set(int(k) for k in ks)))
    bs = _eval_batch_size(len(xs[0]), batch_size, mesh)
    max_members = max_members or default_max_members(bs, chunk_size)
    n_slices = -(-n_members // max_members)
    bounds = np.linspace(0, n_members, n_slices + 1).round().astype(int)  # slices of near-equal size
    results = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t0 = time.time()
        idx = list(range(lo, hi))
        shared = all(_same_array(xs[i], xs[lo]) for i in idx) and (
            binarize != "dynamic" or len({int(seeds[i]) for i in idx}) == 1)
        if shared:
            batches, mask = eval_batches(binarize_eval(xs[lo], binarize, int(seeds[lo])), bs)
        else:  # (N, members, D): binarized draws stored as bool, cast to float32 on the device
            per = [binarize_eval(xs[i], binarize, int(seeds[i]), np.bool_ if binarize == "dynamic" else np.float32)
                   for i in idx]
            batches, mask = eval_batches(np.stack(per, axis=1), bs)
        params = jax.tree_util.tree_map(lambda a: a[lo:hi], stacked_params)
        slice_keys = jnp.stack([keys[i] for i in idx])
        accs = [_SplitSums() for _ in idx]
        for b in range(batches.shape[0]):
            out = jax.device_get(_members_bounds(model, params, batches[b], slice_keys, ks, chunk_size, mesh,
                                                 None if shared else 1, np.int32(b)))
            m = np.asarray(mask[b])
            for j, acc in enumerate(accs):
                acc.add({name: jax.tree.map(lambda a: a[j], v) for name, v in out.items()}, m)
        results += [acc.result(model, keys[i], ks, surgery, surgery_samples, t0) for i, acc in zip(idx, accs)]
    return results
