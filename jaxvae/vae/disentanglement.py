"""Disentanglement metrics: how well single latent coordinates capture single ground-truth factors.

Both metrics take the encoder means ``latents`` (N, d) of N examples and their known factors of variation
``factors`` (N, K) (e.g. ``Dataset.test_factors`` of ``factors_toy``), and are pure numpy functions
(no randomness: DCI's train/test split is the first / last part of the rows).

- ``mig``: the Mutual Information Gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating sources of
  disentanglement in VAEs"), estimated from discretised means as in Locatello et al. 2019
  (disentanglement_lib):

      MIG = (1/K) sum_k (I(z_{j(k)}; v_k) - max_{j != j(k)} I(z_j; v_k)) / H(v_k),
      j(k) = argmax_j I(z_j; v_k).

  Every latent is cut into ``num_bins`` (default 20) equal-width bins between its minimum and maximum;
  a factor with at most ``num_bins`` distinct values (a discrete factor such as orientation) keeps its
  values as categories, any other factor is binned like the latents. I and H are plug-in estimates (nats)
  from the joint histogram. A latent that copies factor k scores 1 for k; with d latents independent of
  v_k the plug-in I is only its positive bias, about (B_z - 1)(B_v - 1) / (2N) nats.

- ``dci``: Disentanglement, Completeness and Informativeness (Eastwood & Williams 2018, "A framework for the
  quantitative evaluation of disentangled representations"), with the linear regressor of their paper's
  Lasso variant replaced by ridge-regularised least squares on standardised latents and factors (a
  closed form, no hyper-parameter search). The importance R_jk = |W_jk| of latent j for factor k
  (summed over the one-hot columns of a discrete factor), P_jk = R_jk / sum_k' R_jk', and

      D = sum_j rho_j (1 - H_K(P_j.)),   rho_j = sum_k R_jk / sum_jk R_jk,
      C = (1/K) sum_k (1 - H_d(P~_.k)),  P~_jk = R_jk / sum_j' R_j'k,
      I = (1/K) sum_k R^2_k   (held-out coefficient of determination of the regression),

  with H_K the entropy in base K (so D, C are in [0, 1]). A rotation of two factors into two latents
  leaves each of those latents with P = (1/2, 1/2, 0, ...) and D_j = 1 - log 2 / log K.
"""

from __future__ import annotations

import numpy as np

__all__ = ["discretize", "entropy", "mutual_information", "mutual_information_matrix", "mig", "dci",
           "is_discrete", "disentanglement_metrics"]

NUM_BINS = 20


def is_discrete(values: np.ndarray, num_bins: int = NUM_BINS) -> bool:
    """A factor column is treated as categorical when it has at most ``num_bins`` distinct values."""
    return len(np.unique(values)) <= num_bins


def _bin(values: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-width bin index in [0, num_bins) between min and max (a constant column is all 0)."""
    v = np.asarray(values, np.float64)
    lo, hi = v.min(), v.max()
    if hi <= lo:
        return np.zeros(len(v), np.int64)
    return np.clip(((v - lo) / (hi - lo) * num_bins).astype(np.int64), 0, num_bins - 1)


def discretize(values: np.ndarray, num_bins: int = NUM_BINS, keep_discrete: bool = False) -> np.ndarray:
    """(N, C) -> (N, C) int codes per column: ``num_bins`` equal-width bins, or, with ``keep_discrete``,
    the category index of columns that pass ``is_discrete``."""
    v = np.asarray(values)
    v = v[:, None] if v.ndim == 1 else v
    cols = []
    for c in v.T:
        if keep_discrete and is_discrete(c, num_bins):
            cols.append(np.unique(c, return_inverse=True)[1].reshape(-1).astype(np.int64))
        else:
            cols.append(_bin(c, num_bins))
    return np.stack(cols, axis=1)


def entropy(codes: np.ndarray) -> float:
    """Plug-in H(a) = -sum_a p(a) log p(a) in nats of one int column."""
    p = np.bincount(np.asarray(codes).reshape(-1)) / len(codes)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(a; b) = sum p(a, b) log p(a, b) / (p(a) p(b)) in nats of two int columns."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz]))))


def mutual_information_matrix(latents: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS):
    """(I, H): I[j, k] = I(z_j; v_k) of the discretised latents and factors (d, K), and H[k] = H(v_k)."""
    z = discretize(latents, num_bins)
    v = discretize(factors, num_bins, keep_discrete=True)
    mi = np.array([[mutual_information(z[:, j], v[:, k]) for k in range(v.shape[1])] for j in range(z.shape[1])])
    return mi, np.array([entropy(v[:, k]) for k in range(v.shape[1])])


def mig(latents: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """Mutual Information Gap (Chen et al. 2018) of discretised encoder means; see the module docstring.

    Returns ``mig`` (the mean over factors), ``per_factor`` (K,) normalised gaps, ``latent`` (K,) the
    index j(k) of the latent with the largest I(z_j; v_k), ``mi`` (d, K) and ``entropy`` (K,).
    """
    latents, factors = _check(latents, factors)
    mi, h = mutual_information_matrix(latents, factors, num_bins)
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    per_factor = np.where(h > 0, (top[0] - second) / np.where(h > 0, h, 1.0), 0.0)
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, "latent": np.argmax(mi, axis=0),
            "mi": mi, "entropy": h}


def _standardize(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    sd = ref.std(0)
    return (a - ref.mean(0)) / np.where(sd > 0, sd, 1.0)


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    """Row-wise entropy of the distributions p (..., n) in base ``base``; 0 log 0 = 0."""
    logp = np.log(np.where(p > 0, p, 1.0))
    return -np.sum(p * logp, axis=-1) / np.log(base)


def dci(latents: np.ndarray, factors: np.ndarray, *, train_fraction: float = 0.8, ridge: float = 1e-3,
        num_bins: int = NUM_BINS) -> dict:
    """DCI (Eastwood & Williams 2018) with a linear ridge regressor; see the module docstring.

    Rows [0, n_train) fit the regressions, the rest give the held-out R^2. A discrete factor (``is_discrete``)
    is regressed as its one-hot columns; its importance is the sum of their |W| and its R^2 their mean.
    ``ridge``: lambda of min |Y - Z W|^2 / n + lambda |W|^2 on standardised Z, Y. Returns ``disentanglement``,
    ``completeness``, ``informativeness`` and ``importance`` (d, K).
    """
    latents, factors = _check(latents, factors)
    n, d = latents.shape
    n_train = int(round(train_fraction * n))
    if not 1 < n_train < n:
        raise ValueError(f"dci: train_fraction={train_fraction} leaves no train or test rows of {n}")
    z_tr = _standardize(latents[:n_train], latents[:n_train])
    z_te = _standardize(latents[n_train:], latents[:n_train])
    gram = z_tr.T @ z_tr / n_train + ridge * np.eye(d)
    importance, r2 = [], []
    for k in range(factors.shape[1]):
        v = factors[:, k]
        if is_discrete(v, num_bins):
            y = (v[:, None] == np.unique(v)[None, :]).astype(np.float64)
        else:
            y = v[:, None].astype(np.float64)
        y_tr, y_te = _standardize(y[:n_train], y[:n_train]), _standardize(y[n_train:], y[:n_train])
        w = np.linalg.solve(gram, z_tr.T @ y_tr / n_train)  # (d, columns)
        importance.append(np.abs(w).sum(1))
        resid = np.mean((y_te - z_te @ w) ** 2, axis=0)
        var = np.var(y_te, axis=0)
        r2.append(float(np.mean(np.where(var > 0, 1.0 - resid / np.where(var > 0, var, 1.0), 0.0))))
    r = np.stack(importance, axis=1)  # (d, K)
    num_factors = r.shape[1]
    total = r.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(r2)),
                "importance": r}
    row = r.sum(1)
    p_code = r / np.where(row > 0, row, 1.0)[:, None]
    d_j = 1.0 - _entropy_base(p_code, num_factors) if num_factors > 1 else np.ones(d)
    disentanglement = float(np.sum(row / total * d_j))
    col = r.sum(0)
    p_factor = (r / np.where(col > 0, col, 1.0)[None, :]).T  # (K, d)
    c_k = 1.0 - _entropy_base(p_factor, d) if d > 1 else np.ones(num_factors)
    return {"disentanglement": disentanglement, "completeness": float(np.mean(c_k)),
            "informativeness": float(np.mean(r2)), "importance": r}


def _check(latents, factors):
    z, v = np.asarray(latents, np.float64), np.asarray(factors, np.float64)
    z = z[:, None] if z.ndim == 1 else z
    v = v[:, None] if v.ndim == 1 else v
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v) or len(z) < 2:
        raise ValueError(f"latents {z.shape} and factors {v.shape} must be (N, d) and (N, K) with one N >= 2")
    return z, v


def disentanglement_metrics(latents: np.ndarray, factors: np.ndarray, factor_names, num_bins: int = NUM_BINS
                            ) -> dict:
    """MIG and DCI as a JSON-ready dict: ``mig``, ``mig_per_factor`` {name: gap}, ``mig_latent``
    {name: j(k)}, ``mi`` {name: [I(z_j; v_k) for j]}, ``factor_entropy`` {name: H(v_k)}, ``dci_*``."""
    names = [str(n) for n in factor_names]
    m = mig(latents, factors, num_bins)
    c = dci(latents, factors, num_bins=num_bins)
    return {
        "mig": m["mig"],
        "mig_per_factor": {n: float(g) for n, g in zip(names, m["per_factor"])},
        "mig_latent": {n: int(j) for n, j in zip(names, m["latent"])},
        "mi": {n: [float(x) for x in m["mi"][:, k]] for k, n in enumerate(names)},
        "factor_entropy": {n: float(h) for n, h in zip(names, m["entropy"])},
        "num_bins": num_bins,
        "dci_disentanglement": c["disentanglement"],
        "dci_completeness": c["completeness"],
        "dci_informativeness": c["informativeness"],
    }
