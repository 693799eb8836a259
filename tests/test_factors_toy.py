"""The generated ``factors_toy`` data set: independent factors, images a deterministic function of them plus
the stated noise, and its entry in ``load_dataset``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxvae.data import factors_toy as F
from jaxvae.data import load_dataset


@pytest.fixture(scope="module")
def data():
    return load_dataset("factors_toy")


def test_load_dataset_shapes_labels_and_names(data):
    assert data.image_shape == (8, 8, 1) and data.factor_names == ("brightness", "contrast", "orientation")
    for x, f, y, n in [(data.train, data.train_factors, data.train_labels, 4000),
                       (data.valid, data.valid_factors, data.valid_labels, 500),
                       (data.test, data.test_factors, data.test_labels, 1000)]:
        assert x.shape == (n, 64) and x.dtype == np.float32 and f.shape == (n, 3)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert np.array_equal(y, f[:, 2].astype(np.int64))  # labels = orientation
    assert not data.is_binary
    again = load_dataset("factors_toy")  # fixed seeds: the same arrays every time
    assert np.array_equal(again.test, data.test) and np.array_equal(again.test_factors, data.test_factors)
    assert not np.array_equal(data.train[:1000], data.test)  # the splits use different seeds


def test_factors_are_independent(data):
    f = data.train_factors.astype(np.float64)
    n = len(f)
    onehot = (f[:, 2:3] == np.arange(4)).astype(np.float64)
    cols = np.concatenate([f[:, :2], onehot], axis=1)
    r = np.corrcoef(cols, rowvar=False)
    # sample correlations of independent variables are ~N(0, 1/n): |r| < 4/sqrt(n) = 0.063 (4 sigma), for
    # brightness-contrast and each continuous factor against each orientation indicator
    assert abs(r[0, 1]) < 4 / math.sqrt(n)
    assert np.all(np.abs(r[:2, 2:]) < 4 / math.sqrt(n))
    # the marginals are the stated ones: uniform ranges and 4 equally likely orientations (binomial sd 27)
    assert f[:, 0].min() >= 0.35 and f[:, 0].max() <= 0.65 and f[:, 1].min() >= -0.2 and f[:, 1].max() <= 0.2
    counts = np.bincount(f[:, 2].astype(int), minlength=4)
    assert np.all(np.abs(counts - n / 4) < 4 * math.sqrt(n * 0.25 * 0.75))


def test_images_are_factors_plus_stated_noise():
    x, f = F.make_split(7, 3000)
    rng = np.random.default_rng(7)  # the documented order of draws: factors, then the noise
    f2 = F.sample_factors(rng, 3000)
    noise = F.NOISE_STD * rng.standard_normal((3000, 64))
    assert np.allclose(f, f2, atol=1e-7)
    mean = F.noiseless_images(f2)
    assert np.array_equal(x, np.clip(mean + noise, 0, 1).astype(np.float32))
    # the noiseless image is the factors' deterministic function: its mean is the brightness and its
    # centre-block mean minus edge mean is the contrast (the bar is orthogonal to both), exactly
    p, _ = F.patterns()
    centre = p > 0
    assert np.allclose(mean.mean(1), f2[:, 0], atol=1e-12)
    assert np.allclose(mean[:, centre].mean(1) - mean[:, ~centre].mean(1), f2[:, 1], atol=1e-12)
    # no clipping of the means: they stay 2.5 noise sd inside [0, 1]
    assert mean.min() >= 0.05 and mean.max() <= 0.95
    # the residual is the N(0, 0.02^2) noise: its sample sd over 192000 pixels is within 1% (sd of the
    # estimate 0.02 / sqrt(2 * 192000) = 3e-5, plus the few clipped pixels)
    resid = x.astype(np.float64) - mean
    assert np.std(resid) == pytest.approx(F.NOISE_STD, rel=0.01)
    assert abs(np.mean(resid)) < 4 * F.NOISE_STD / math.sqrt(resid.size)


def test_orientation_changes_only_the_bar():
    f = np.array([[0.5, 0.1, o] for o in range(4)])
    imgs = F.noiseless_images(f).reshape(4, 8, 8)
    assert np.allclose(imgs.mean((1, 2)), 0.5)
    # each bar is brightest along its own line: row 3 (horizontal), column 3 (vertical), the diagonals
    assert imgs[0][3].mean() > imgs[0][:, 0].mean() and imgs[1][:, 3].mean() > imgs[1][0].mean()
    assert np.diag(imgs[2]).mean() > np.diag(imgs[3]).mean()
    assert np.diag(imgs[3][:, ::-1]).mean() > np.diag(imgs[2][:, ::-1]).mean()


def test_manifold_residual_of_data_noise_and_blur():
    f = F.sample_factors(np.random.default_rng(5), 2000)
    clean = F.noiseless_images(f)
    assert np.max(F.manifold_residual(clean)) < 1e-24  # the generator's own means lie on the manifold
    x, _ = F.make_split(5, 2000)
    # noise N(0, s^2) minus the part the 2 fitted coordinates (b, c) absorb: E = s^2 (1 - 2/64), with the
    # sample mean over 2000 x 64 squared normals within 1% (sd sqrt(2 / 128000) = 0.4%)
    assert np.mean(F.manifold_residual(x)) == pytest.approx(F.NOISE_STD**2 * (1 - 2 / 64), rel=0.015)
    # a blurred image (the average of the 4 bars) is off the manifold by h^2 min_o |B_o - mean B|^2 / 64
    _, bars = F.patterns()
    blur = 0.5 + F.BAR_AMPLITUDE * bars.mean(0)
    expected = F.BAR_AMPLITUDE**2 * min(np.sum((bars[o] - bars.mean(0)) ** 2) for o in range(4)) / 64
    assert F.manifold_residual(blur[None])[0] == pytest.approx(expected, rel=1e-9)
    assert expected > 2 * F.NOISE_STD**2  # clearly worse than a data image


def test_run_on_factors_toy_writes_rate_distortion_and_disentanglement(run_env, tmp_path):
    """A one-epoch run of experiments/seed_claims.py: results.json holds R and D that add up to -ELBO, and
    MIG/DCI of the encoder means against the test factors."""
    from runhelpers import check_ok, run_main

    workdir = tmp_path / "run"
    check_ok(run_main(run_env, workdir, "--config.train.num_epochs=1", "--config.eval.ks=(1,)",
                      "--config.eval.images=False", "--config.model.latent_dim=3", "--config.objective.beta=2.0",
                      config="experiments/seed_claims.py"))
    t = json.loads((workdir / "results.json").read_text())["test"]
    assert t["num_examples"] == 1000
    # R and D are the test ELBO's own KL and reconstruction terms (same z draws): R + D = -ELBO up to the
    # float32 rounding of each example's difference (|elbo_i| ~ 1e2, eps 6e-8 -> < 1e-5 for the mean)
    assert t["rate"] == t["kl"] and t["distortion"] == -t["reconstruction"]
    assert t["rate"] + t["distortion"] == pytest.approx(-t["elbo"], abs=1e-5)
    assert t["rate"] > 0
    d = t["disentanglement"]
    assert set(d["mig_per_factor"]) == {"brightness", "contrast", "orientation"}
    assert 0.0 <= d["mig"] <= 1.0 and all(0 <= j < 3 for j in d["mig_latent"].values())
    assert d["factor_entropy"]["orientation"] == pytest.approx(math.log(4), abs=0.01)  # ~250 of each
    assert len(d["mi"]["brightness"]) == 3
    assert 0.0 < t["sample_manifold_rmse"] < 0.5


def test_dsprites_without_a_prepared_copy_says_what_to_do(tmp_path):
    """dSprites is optional (TFDS, prepared with TensorFlow); offline and unprepared it is one clear error."""
    from jaxvae.data import DataError

    with pytest.raises(DataError, match="dsprites is not prepared in .* download=False"):
        load_dataset("dsprites", data_dir=str(tmp_path), download=False)
