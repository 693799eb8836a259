"""MIG and DCI (jaxvae.vae.disentanglement) on constructed latents whose scores are known.

Tolerances: with N examples the plug-in mutual information of two independent variables discretised into
A and B cells has positive bias (A - 1)(B - 1) / (2N) nats (Miller 1955); a latent independent of a
factor therefore "explains" at most a few times that much, which bounds how far MIG can fall from 1 (a
copy) or rise from 0 (noise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxvae.vae import disentanglement as dis

N = 10000
BINS = dis.NUM_BINS
BIAS = (BINS - 1) ** 2 / (2 * N)  # plug-in MI bias of independent 20-bin variables: 0.018 nats


def _factors(seed=0, n=N):
    """Two continuous factors (uniform) and one discrete (4 values), independent."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 1, n), rng.uniform(-1, 1, n), rng.integers(0, 4, n)], axis=1)


def test_entropy_and_mutual_information_closed_forms():
    a = np.repeat(np.arange(4), 26)  # uniform on 4 values: H = log 4
    assert dis.entropy(a) == pytest.approx(math.log(4), abs=1e-12)
    assert dis.mutual_information(a, a) == pytest.approx(math.log(4), abs=1e-12)
    assert dis.mutual_information(a, a % 2) == pytest.approx(math.log(2), abs=1e-12)  # a determines a % 2
    b = np.tile(np.arange(2), 52)  # 13 zeros and 13 ones in each block of a: exactly independent
    assert dis.mutual_information(a, b) == pytest.approx(0.0, abs=1e-12)


def test_discretize_bins_and_categories():
    v = np.array([0.0, 0.049, 0.05, 0.5, 0.999, 1.0])
    assert dis.discretize(v, 20)[:, 0].tolist() == [0, 0, 1, 10, 19, 19]  # max falls in the last bin
    cat = np.array([3.0, 1.0, 1.0, 7.0])
    assert dis.discretize(cat, 20, keep_discrete=True)[:, 0].tolist() == [1, 0, 0, 2]
    assert dis.discretize(np.ones(5), 20)[:, 0].tolist() == [0] * 5  # constant column


def test_mig_copy_scores_one_for_the_copied_factor():
    v = _factors()
    rng = np.random.default_rng(1)
    # latent 2 copies the brightness-like factor 0, latent 0 the discrete factor, latent 1 is noise
    z = np.stack([v[:, 2], rng.normal(size=N), v[:, 0]], axis=1)
    m = dis.mig(z, v)
    h = m["entropy"]
    assert h[2] == pytest.approx(math.log(4), abs=0.01)  # 4 equally likely values (2500 +- 43 each)
    assert m["latent"].tolist()[0] == 2 and m["latent"].tolist()[2] == 0
    # I(z_copy; v) = H(v) exactly (same bins); the runner-up is an independent latent: at most ~3 bias
    for k in (0, 2):
        assert m["mi"][m["latent"][k], k] == pytest.approx(h[k], abs=1e-12)
        assert 1 - 3 * BIAS / h[k] <= m["per_factor"][k] <= 1.0
    # factor 1 is copied by nobody: every latent is independent of it, the gap is a difference of biases
    assert m["per_factor"][1] < 3 * BIAS / h[1]


def test_mig_rotation_scores_lower_than_copy():
    v = _factors()
    a, b = (v[:, 0] - 0.5) * math.sqrt(12), v[:, 1] * math.sqrt(3)  # unit variance
    copy = dis.mig(np.stack([a, b], 1), v[:, :2])["mig"]
    rot = dis.mig(np.stack([a + b, a - b], 1) / math.sqrt(2), v[:, :2])["mig"]
    assert copy > 0.99
    # each rotated latent carries about half of each factor: both share the top MI, the gaps are small
    assert rot < 0.25 < copy - 0.5


def test_mig_noise_scores_about_zero():
    v = _factors()
    z = np.random.default_rng(2).normal(size=(N, 5))
    m = dis.mig(z, v)
    assert m["mi"].max() < 3 * BIAS
    assert 0.0 <= m["mig"] < 3 * BIAS / math.log(4)


def test_dci_copy_rotation_noise():
    v = _factors()[:, :2]
    a, b = (v[:, 0] - 0.5) * math.sqrt(12), v[:, 1] * math.sqrt(3)
    copy = dis.dci(np.stack([b, a], 1), v)
    assert copy["disentanglement"] == pytest.approx(1.0, abs=1e-3)
    assert copy["completeness"] == pytest.approx(1.0, abs=1e-3)
    assert copy["informativeness"] == pytest.approx(1.0, abs=1e-5)  # an exact linear map; ridge 1e-3 shrinks
    rot = dis.dci(np.stack([a + b, a - b], 1) / math.sqrt(2), v)
    # |W| = (1/sqrt2, 1/sqrt2) for both factors: P = (1/2, 1/2) per latent, D = 1 - log 2 / log 2 = 0
    assert rot["disentanglement"] == pytest.approx(0.0, abs=0.02)
    assert rot["completeness"] == pytest.approx(0.0, abs=0.02)
    assert rot["informativeness"] == pytest.approx(1.0, abs=1e-5)  # as informative, not disentangled
    noise = dis.dci(np.random.default_rng(3).normal(size=(N, 4)), v)
    # held-out R^2 of a 4-coefficient fit to unrelated data: <= 0 + O(d / n_test) = O(0.002)
    assert noise["informativeness"] < 0.01


def test_dci_rotation_among_three_factors_has_the_closed_form():
    v = _factors()
    v[:, 2] = np.random.default_rng(4).uniform(0, 1, N)  # three continuous factors
    a, b = (v[:, 0] - 0.5) * math.sqrt(12), v[:, 1] * math.sqrt(3)
    z = np.stack([(a + b) / math.sqrt(2), (a - b) / math.sqrt(2), v[:, 2]], 1)
    r = dis.dci(z, v)
    # Standardised W: latents 0, 1 have |W| = (1/sqrt2, 1/sqrt2, 0), latent 2 has (0, 0, 1). Then
    # row sums (sqrt2, sqrt2, 1), rho = (sqrt2, sqrt2, 1) / (2 sqrt2 + 1), D_0 = D_1 = 1 - log 2 / log 3, D_2 = 1.
    s2 = math.sqrt(2)
    expected = (2 * s2 * (1 - math.log(2) / math.log(3)) + 1) / (2 * s2 + 1)
    # = 0.534; the sample variances of a, b differ from 1 by ~1% (N = 10^4), ridge 1e-3 moves it < 1e-3
    assert r["disentanglement"] == pytest.approx(expected, abs=0.01)
    # completeness: factors 0, 1 spread evenly over 2 of 3 latents (1 - log 2 / log 3), factor 2 complete
    assert r["completeness"] == pytest.approx((2 * (1 - math.log(2) / math.log(3)) + 1) / 3, abs=0.01)


def test_disentanglement_metrics_names_factors():
    v = _factors(n=2000)
    z = np.stack([v[:, 1], v[:, 0]], axis=1)
    out = dis.disentanglement_metrics(z, v, ("brightness", "contrast", "orientation"))
    assert out["mig_latent"] == {"brightness": 1, "contrast": 0, "orientation": out["mig_latent"]["orientation"]}
    assert out["mig_per_factor"]["brightness"] > 0.95 and out["mig_per_factor"]["orientation"] < 0.05
    assert set(out) >= {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"}


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="must be"):
        dis.mig(np.zeros((5, 2)), np.zeros((4, 1)))
