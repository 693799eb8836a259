"""Image-native models (issue 19): discretized likelihoods are exact probabilities, conv networks have the
right shapes, an MLP on images equals the flat MLP, a conv VAE trains, resumes exactly, and runs as
vectorized members."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, ndtr

from jaxvae.experiment import train as train_lib
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.imaging import bits_per_dim_results
from jaxvae.vae import likelihoods as L
from jaxvae.vae.model import VAE

GRID = np.arange(256) / 255.0 * 2 - 1  # the 256 bin centres on [-1, 1]
# (mean, log_scale) from very narrow (s = e^-30, far below a bin) to very wide (s = e^30), inside and
# outside [-1, 1]
PARAMS = [(0.0, -2.0), (0.3, -7.0), (-0.99, 3.0), (0.5, -30.0), (0.0, 30.0), (1.5, -5.0), (-3.0, 0.5),
          (1.0 - 1 / 255, -6.0), (-1.0, -9.0)]


def _direct(cdf, y, m, s):
    """P(bin of y) as a plain CDF difference in float64 (end bins open)."""
    upper = np.where(y > 1 - 1 / 255, 1.0, cdf((y + 1 / 255 - m) / np.exp(s)))
    lower = np.where(y < -1 + 1 / 255, 0.0, cdf((y - 1 / 255 - m) / np.exp(s)))
    return upper - lower


@pytest.mark.parametrize("name,fn,cdf", [("logistic", L.discretized_logistic_log_prob, expit),
                                         ("gaussian", L.discretized_gaussian_log_prob, ndtr)])
def test_discretized_likelihoods_sum_to_one_and_match_cdf_differences(name, fn, cdf):
    with jax.enable_x64(True):
        jfn = jax.jit(fn)
        for m, s in PARAMS:
            logp = np.asarray(jfn(jnp.asarray(GRID), m, s))
            assert np.all(np.isfinite(logp)), (name, m, s)
            assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-5), (name, m, s)
            direct = _direct(cdf, GRID, m, s)
            ok = direct > 1e-12  # where the float64 difference itself keeps >= 4 significant digits
            # the midpoint rule of the Gaussian (bins < 1e-3 scales wide) is exact to (a-b)^2/24 < 1e-7
            np.testing.assert_allclose(np.exp(logp[ok]), direct[ok], rtol=1e-6, atol=1e-12)


def test_discretized_logistic_finite_with_finite_gradients_in_float32():
    y = jnp.asarray(GRID[[0, 1, 127, 254, 255]], jnp.float32)
    f = lambda m, s: jnp.sum(L.discretized_logistic_log_prob(y, m, s)) + jnp.sum(
        L.discretized_gaussian_log_prob(y, m, s))
    grad = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1))))
    m, s = (jnp.asarray(v, jnp.float32) for v in zip(*PARAMS))
    v, g = grad(m, s)
    assert np.all(np.isfinite(np.asarray(v))) and np.all(np.isfinite(np.asarray(g))), (v, g)


def _direct_mixture(y, logits, means, log_scales, coeffs):
    """p(pixel) of the PixelCNN++ mixture, by hand in float64: y (N, C) against one pixel's parameters."""
    w = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    c = np.tanh(coeffs)
    total = np.zeros(len(y))
    for k in range(len(w)):
        mu = [means[k, 0]] if y.shape[1] == 1 else [means[k, 0] + 0 * y[:, 0], means[k, 1] + c[k, 0] * y[:, 0]]
        prob = np.ones(len(y))
        for ch in range(y.shape[1]):
            prob *= _direct(expit, y[:, ch], mu[ch], log_scales[k, ch])
        total += w[k] * prob
    return total


@pytest.mark.parametrize("channels,components", [(1, 3), (2, 2)])
def test_logistic_mixture_sums_to_one_over_every_pixel_value(channels, components):
    """All 256^C values of one pixel (C = 2: 65536, with the channel coupling coefficient)."""
    rng = np.random.default_rng(channels)
    logits = rng.normal(size=components)
    means = rng.uniform(-1.2, 1.2, size=(components, channels))
    log_scales = rng.uniform(-6, 0, size=(components, channels))
    coeffs = rng.normal(size=(components, channels * (channels - 1) // 2))
    y = np.stack(np.meshgrid(*[GRID] * channels, indexing="ij"), -1).reshape(-1, channels)
    with jax.enable_x64(True):
        logp = np.asarray(jax.jit(L.mixture_logistic_log_prob)(jnp.asarray(y), *(jnp.asarray(a) for a in (
            logits, means, log_scales, coeffs))))
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(np.exp(logp), _direct_mixture(y, logits, means, log_scales, coeffs),
                               rtol=1e-8, atol=1e-14)


def test_mixture_part_on_images_equals_per_pixel_sum():
    """The registered part on (B, H, W, C) sums mixture_logistic_log_prob over the H W pixels."""
    model = VAE(x_dim=2 * 2 * 3, latent_dim=2, x_shape=(2, 2, 3), network="mlp",
                likelihood="discretized_logistic_mixture", num_mixtures=2)
    part = model.likelihood_part
    assert (part.channels, part.event_ndim, part.num_mixtures) == (3, 3, 2)
    assert [h[:2] for h in part.heads(12)] == [("out", 24), ("out_logits", 8), ("out_log_scale", 24),
                                               ("out_coeffs", 24)]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 2, 2, 3)) / 255.0
    out = tuple(jnp.asarray(rng.normal(size=(5, 2, 2, k)), jnp.float32) for k in (6, 2, 6, 6))
    got = np.asarray(jax.jit(part.log_prob)(jnp.asarray(x, jnp.float32), out))
    means, logits = np.asarray(out[0]).reshape(5, 4, 2, 3), np.asarray(out[1]).reshape(5, 4, 2)
    scales = np.maximum(np.asarray(out[2]).reshape(5, 4, 2, 3), -7.0)
    coeffs = np.asarray(out[3]).reshape(5, 4, 2, 3)
    y = (2 * x - 1).reshape(5, 4, 3)
    per_pixel = jax.jit(L.mixture_logistic_log_prob)(y, logits, means, scales, coeffs)  # (5, 4)
    want = [sum(float(per_pixel[b, p]) for p in range(4)) for b in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bits_per_dim_of_a_uniform_model_is_8():
    """A model giving every 8-bit subpixel probability 1/256 has NLL = D ln 256 nats: 8 bits/dim."""
    model = VAE(x_dim=4 * 4 * 3, latent_dim=2, likelihood="discretized_logistic")
    ds = type("D", (), {"image_shape": (4, 4, 3), "is_binary": False})()
    config = base_config()
    nll = 48 * math.log(256)
    r = bits_per_dim_results(config, model, ds, {"nll": nll, "elbo": -2 * nll})
    assert r["bits_per_dim"] == pytest.approx(8.0, abs=1e-12)
    assert r["elbo_bits_per_dim"] == pytest.approx(16.0, abs=1e-12)
    # and a uniform per-subpixel log-probability through the likelihood's own sum over (H, W, C)
    part = VAE(x_dim=48, latent_dim=2, x_shape=(4, 4, 3), network="conv",
               likelihood="discretized_logistic", conv_strides=(2,), conv_widths=(4,)).likelihood_part
    assert part.event_ndim == 3
    uniform = jnp.full((1, 4, 4, 3), -math.log(256.0))
    assert float(L.bits_per_dim(-L._sum_event(uniform, part.event_ndim)[0], 48)) == pytest.approx(8.0, 1e-6)
    # densities get no bits/dim (they would need a dequantization bound)
    assert bits_per_dim_results(config, VAE(x_dim=48, latent_dim=2, likelihood="gaussian"), ds,
                                {"nll": 1.0, "elbo": -1.0}) == {}


@pytest.mark.parametrize("shape,network,likelihood", [
    ((28, 28, 1), "conv", "bernoulli"), ((32, 32, 3), "resnet", "discretized_logistic_mixture"),
    ((32, 32, 3), "conv", "discretized_gaussian"), ((28, 28, 1), "gated", "bernoulli"),
    ((32, 32, 3), "gated", "discretized_logistic_mixture")])
def test_conv_encoder_decoder_shapes(shape, network, likelihood):
    d = math.prod(shape)
    model = VAE(x_dim=d, latent_dim=6, x_shape=shape, network=network, likelihood=likelihood,
                conv_widths=(4, 8), normalization="group" if network == "resnet" else "layer",
                activation="relu", num_mixtures=2)
    params = jax.eval_shape(model.init, jax.random.key(0))  # shapes only: nothing is compiled or run
    x = jnp.zeros((3, *shape))
    mu, logvar, _ = jax.eval_shape(lambda p, x: model.encode(p, x), params, x)
    assert mu.shape == logvar.shape == (3, 6)
    z = jnp.zeros((5, 3, 6))  # K importance samples for each of 3 examples
    out = jax.eval_shape(model.decode, params, z)
    widths = {"bernoulli": (1,), "discretized_gaussian": (3, 3), "discretized_logistic_mixture": (6, 2, 6, 6)}
    outs = out if isinstance(out, tuple) else (out,)
    assert [o.shape for o in outs] == [(5, 3, *shape[:2], k) for k in widths[likelihood]]
    ll = jax.eval_shape(model.log_likelihood, params, x, z)
    assert ll.shape == (5, 3)
    assert jax.eval_shape(model.mean_image, params, z).shape == (5, 3, d)


def test_mlp_on_images_equals_the_flat_mlp():
    """x_shape with an MLP: the same parameters and numbers as the flat model, fed (N, H, W, C)."""
    flat = VAE(x_dim=48, latent_dim=3, encoder_hidden=(8,), decoder_hidden=(8,))
    img = VAE(x_dim=48, latent_dim=3, encoder_hidden=(8,), decoder_hidden=(8,), x_shape=(4, 4, 3))
    p_flat, p_img = jax.jit(flat.init)(jax.random.key(1)), jax.jit(img.init)(jax.random.key(1))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, p_flat, p_img))
    x = (np.random.default_rng(0).random((2, 48)) < 0.5).astype(np.float32)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)), jnp.float32)
    both = jax.jit(lambda pf, pi, x, z: (flat.encode(pf, x).mu, img.encode(pi, x.reshape(2, 4, 4, 3)).mu,
                                         flat.log_likelihood(pf, x, z),
                                         img.log_likelihood(pi, x.reshape(2, 4, 4, 3), z)))
    mu_f, mu_i, ll_f, ll_i = both(p_flat, p_img, x, z)
    np.testing.assert_array_equal(mu_f, mu_i)
    np.testing.assert_array_equal(ll_f, ll_i)


def _synthetic_colour(n=64, seed=0):
    """8x8x3 8-bit images: a random colour on a random half of the image, the rest dark, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8, 3))
    colour = rng.integers(100, 256, (n, 1, 1, 3))
    cut = rng.integers(2, 7, n)
    for i in range(n):
        x[i, :, : cut[i]] = colour[i]
    x = np.clip(x + rng.integers(-8, 9, x.shape), 0, 255)
    return (x / 255.0).astype(np.float32).reshape(n, -1)


def _tiny_conv_config():
    c = base_config()
    c.model.latent_dim = 4
    c.model.network = "conv"
    c.model.conv_widths = (8, 8)
    c.model.activation = "relu"
    c.model.likelihood = "discretized_logistic_mixture"
    c.model.num_mixtures = 2
    c.objective.name = "iwae"
    c.objective.k = 3
    c.train.learning_rate = 3e-3
    return c


def test_conv_vae_trains_and_resumes_exactly(tmp_path):
    """IWAE (K=3) with conv nets and the logistic mixture on 8x8x3 8-bit images: the loss falls over
    20 steps, and 10 steps + checkpoint + restore + 10 steps equals 20 uninterrupted steps bit for bit."""
    from jaxvae.experiment.checkpoints import Checkpoints
    from jaxvae.experiment.building import build_model

    config = _tiny_conv_config()
    x = jnp.asarray(_synthetic_colour())
    model = build_model(config, x.shape[1], (8, 8, 3))
    assert model.x_shape == (8, 8, 3) and model.is_conv
    spe = 4  # 64 examples, batch 16
    tx = train_lib.make_optimizer(config, train_lib.learning_rate_schedule(config, spe)[0])
    run = train_lib.make_run_steps(model, config, tx, spe, 16)
    fresh = lambda: train_lib.create_train_state(model, tx, 0)
    state, losses = fresh(), []
    for _ in range(5):  # 5 x 4 steps; every dispatch is one whole epoch (the same compiled program)
        state, info = run(state, x, 4)
        losses.append(float(info.metrics["loss"]))
    assert int(info.bad_step) == -1 and int(state.step) == 20
    # epoch means of -IWAE_3 in nats per 192-subpixel image (first epoch ~950): measured falling ~20 nats
    # an epoch; each epoch's mean over 64 images moves by far less than that between epochs
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.95 * losses[0], losses

    half = fresh()
    for _ in range(2):
        half, _ = run(half, x, 4)
    ck = Checkpoints(tmp_path)
    ck.save(8, half._asdict(), None)
    ck.close()
    ck = Checkpoints(tmp_path)
    restored, step = ck.restore_latest(fresh()._asdict())
    ck.close()
    assert step == 8
    resumed = train_lib.TrainState(**restored)
    for _ in range(3):
        resumed, _ = run(resumed, x, 4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params, state.params)


@pytest.mark.slow  # a solo run and a 2-member group: 4 compiles (the heaviest test of this file)
def test_conv_members_of_a_vectorized_group_equal_solo_runs(tmp_path):
    """Two seeds of a conv IWAE run on digits (8x8x1) as one vectorized group equal their solo runs."""
    from jaxvae.experiment import runner as R
    from jaxvae.experiment import vectorized as V

    c = base_config()
    c.data.binarize = "dynamic"
    c.model.latent_dim = 4
    c.model.network = "conv"
    c.model.conv_widths = (4, 8)
    c.model.activation = "relu"
    c.objective.name = "iwae"
    c.objective.k = 3
    c.train.batch_size = 100
    c.train.num_epochs = 1
    c.train.budget = 0.5  # 6 steps of batch 100
    c.eval.ks = (1, 5)
    c.eval.valid_k = 5
    c.eval.valid_examples = 50
    c.eval.max_examples = 50
    c.eval.images = False
    configs = V.member_configs(c, [{"seed": 0}, {"seed": 1}])
    solo = R.train_and_evaluate(configs[1], tmp_path / "solo", log=lambda _: None)
    group = V.train_group(configs, [tmp_path / "m0", tmp_path / "m1"], log=lambda _: None)
    member = group[1] if isinstance(group, (list, tuple)) else None
    if member is None:
        import json
        member = json.loads((tmp_path / "m1" / "results.json").read_text())
    assert member["test"]["nll"] == pytest.approx(solo["test"]["nll"], rel=1e-4)
    assert member["test"]["elbo"] == pytest.approx(solo["test"]["elbo"], rel=1e-4)
    assert solo["test"]["bits_per_dim"] == pytest.approx(solo["test"]["nll"] / (64 * math.log(2)))


def test_bad_conv_configs_are_one_clear_line_before_any_compute():
    from jaxvae.data import DataError, load_dataset
    from jaxvae.experiment.validation import ConfigError, check_data, validate_config

    c = base_config()
    c.model.network = "cnn"
    with pytest.raises(ConfigError, match="model.network='cnn' is not one of mlp, conv, resnet, gated"):
        validate_config(c)
    c = base_config()
    c.model.network = "conv"
    c.model.conv_strides = (2, 2, 2)
    with pytest.raises(ConfigError, match=r"model.conv_widths=\(32, 64\) and model.conv_strides=\(2, 2, 2\) "
                                          "must have the same length"):
        validate_config(c)
    c.model.conv_widths, c.model.conv_strides = (4, 4, 4, 4), (2, 2, 2, 2)
    validate_config(c)
    digits = load_dataset("digits")
    with pytest.raises(DataError, match="images of 8x8 are not divisible by the product 16 of "
                                        r"model.conv_strides=\(2, 2, 2, 2\)"):
        check_data(c, digits)
    c.model.conv_widths, c.model.conv_strides = (4,), (2,)
    c.model.likelihood = "discretized_logistic"
    c.data.binarize = "dynamic"
    with pytest.raises(DataError, match="models 8-bit pixels; set data.binarize='none'"):
        check_data(c, digits)


# -- gated convolutions (van den Berg et al. 2018) ---------------------------------------------------
def test_network_families_are_validated_where_they_are_built():
    from jaxvae.experiment.validation import CHOICES, validate_config
    from jaxvae.vae import conv

    assert CHOICES["model.network"] == conv.NETWORKS and "gated" in conv.NETWORKS
    c = base_config()
    c.model.network = "gated"
    validate_config(c)
    with pytest.raises(ValueError, match=r"unknown network 'gate'; choose one of \('mlp', 'conv', 'resnet', 'gated'\)"):
        VAE(x_dim=64, latent_dim=2, x_shape=(8, 8, 1), network="gate")


def test_gated_layers_are_filter_times_sigmoid_gate():
    """Every hidden layer of the gated family is (W_f * x + b_f) * sigmoid(W_g * x + b_g), computed here
    with two separate convolutions from the halves of the stored kernel; the output heads are not gated."""
    from jaxvae.vae import conv

    model = VAE(x_dim=64, latent_dim=3, x_shape=(8, 8, 1), network="gated", conv_widths=(4, 6))
    params = jax.jit(model.init)(jax.random.key(0))
    enc, dec = params["encoder"], params["decoder"]
    assert enc["gated_0"]["conv"]["kernel"].shape == (3, 3, 1, 8)  # 2 x 4 channels: filter and gate
    assert enc["gated_1"]["conv"]["kernel"].shape == (3, 3, 4, 12)
    assert dec["gated_dense"]["dense"]["kernel"].shape == (3, 2 * 2 * 6 * 2)
    assert dec["gated_deconv_0"]["conv"]["kernel"].shape == (3, 3, 6, 12)
    assert dec["gated_deconv_1"]["conv"]["kernel"].shape == (3, 3, 6, 8)
    assert "conv_0" not in enc and "dense" not in dec  # nothing ungated left beside the heads
    x = jnp.asarray(np.random.default_rng(0).random((2, 8, 8, 1)), jnp.float32)
    h = jnp.asarray(np.random.default_rng(1).random((2, 2, 2, 6)), jnp.float32)

    def conv2(x, kern, bias, transpose=False):
        f = jax.lax.conv_transpose if transpose else jax.lax.conv_general_dilated
        return f(x, kern, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias

    @jax.jit
    def both(enc, dec, x, h):
        k, b = enc["gated_0"]["conv"]["kernel"], enc["gated_0"]["conv"]["bias"]
        want_e = conv2(x, k[..., :4], b[:4]) * jax.nn.sigmoid(conv2(x, k[..., 4:], b[4:]))
        got_e = conv.GatedConv(4, 3, 2).apply({"params": enc["gated_0"]}, x)
        k, b = dec["gated_deconv_0"]["conv"]["kernel"], dec["gated_deconv_0"]["conv"]["bias"]
        want_d = conv2(h, k[..., :6], b[:6], True) * jax.nn.sigmoid(conv2(h, k[..., 6:], b[6:], True))
        got_d = conv.GatedConv(6, 3, 2, transpose=True).apply({"params": dec["gated_deconv_0"]}, h)
        return want_e, got_e, want_d, got_d

    want_e, got_e, want_d, got_d = both(enc, dec, x, h)
    assert float(jnp.abs(want_e).max()) > 0.01  # not a trivially zero comparison
    np.testing.assert_allclose(got_e, want_e, rtol=1e-5, atol=1e-6)
    assert got_d.shape == (2, 4, 4, 6)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-6)


def _tiny_binary_conv_config(network):
    """A cheap-to-compile conv model: Bernoulli pixels of 8x8x1 binary images, widths (4, 8), IWAE K=3."""
    c = _tiny_conv_config()
    c.model.network = network
    c.model.conv_widths = (4, 8)
    c.model.likelihood = "bernoulli"
    c.model.init_output_bias = False
    x = (_synthetic_colour().reshape(64, 8, 8, 3)[..., 0] > 0.3).astype(np.float32).reshape(64, 64)
    return c, jnp.asarray(x)


def test_gated_conv_vae_trains():
    """The gated family with IWAE (K=3) on 8x8x1 binary images: the loss falls (one-step dispatches, as
    the runner trains conv nets on CPU)."""
    from jaxvae.experiment.building import build_model

    config, x = _tiny_binary_conv_config("gated")
    model = build_model(config, x.shape[1], (8, 8, 1))
    assert model.network == "gated" and model.x_shape == (8, 8, 1)
    assert train_lib.dispatch_steps(config, model) == (1 if jax.default_backend() == "cpu" else 0)
    tx = train_lib.make_optimizer(config, train_lib.learning_rate_schedule(config, 4)[0])
    run = train_lib.make_run_steps(model, config, tx, 4, 16)
    state, losses = train_lib.create_train_state(model, tx, 0), []
    for _ in range(5):  # 5 epochs of 4 one-step dispatches; epoch means of -IWAE_3
        epoch = []
        for _ in range(4):
            state, info = run(state, x, 1)
            assert int(info.bad_step) == -1
            epoch.append(float(info.metrics["loss"]))
        losses.append(float(np.mean(epoch)))
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.97 * losses[0], losses


def test_one_step_dispatches_equal_the_fused_scan():
    """A conv model trained by 4 one-step dispatches (straight-line code, no lax.scan: XLA:CPU runs conv
    gradients in a loop ~20x slower) reaches the parameters of one 4-step scan; MLPs keep one epoch."""
    from jaxvae.experiment.building import build_model

    config, x = _tiny_binary_conv_config("conv")
    model = build_model(config, x.shape[1], (8, 8, 1))
    tx = train_lib.make_optimizer(config, train_lib.learning_rate_schedule(config, 4)[0])
    run = train_lib.make_run_steps(model, config, tx, 4, 16)
    fused, _ = run(train_lib.create_train_state(model, tx, 0), x, 4)
    single = train_lib.create_train_state(model, tx, 0)
    for _ in range(4):
        single, _ = run(single, x, 1)
    assert int(single.step) == int(fused.step) == 4
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           single.params, fused.params)
    mlp = base_config()
    assert train_lib.dispatch_steps(mlp, VAE(x_dim=64, latent_dim=2)) == 0
    config.train.steps_per_dispatch = 7  # an explicit value is kept
    assert train_lib.dispatch_steps(config, model) == 7


@pytest.mark.slow  # compiles the 32x32x3 mixture model's gradient: ~1 min on a shared 2-core CPU
def test_torch_benchmark_network_is_jaxvae_network(monkeypatch):
    """benchmarks/conv_bench.py's PyTorch network is the same network: same parameter count, same
    analytic conv/dense FLOPs as torch's own counter, and with jaxvae's parameters copied in, the same loss
    and gradients for the same images and noise (skipped where torch is not installed)."""
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "conv_bench.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its sibling import (common), as `python benchmarks/X.py`
    spec = importlib.util.spec_from_file_location("conv_bench", path)
    B = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(B)

    counts = B.torch_counts()
    params = jax.eval_shape(B.jax_model().init, jax.random.key(0))
    assert counts["params"] == sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
    flops = B.model_flops()
    assert counts["conv_forward"] == flops["conv_forward"] and counts["dense_forward"] == flops["dense_forward"]
    same = B.compare(n=2)
    assert same["loss_rel_diff"] < 1e-5 and same["grad_max_rel_diff"] < 1e-3, same


@pytest.mark.parametrize("k,s,n", [(3, 2, 4), (4, 2, 3), (3, 1, 5), (2, 2, 3), (3, 3, 2)])
def test_conv_transpose_custom_gradient_equals_autodiff(k, s, n):
    """jaxvae.vae.conv.ConvTranspose: flax nn.ConvTranspose's parameters (same values for the same key),
    outputs and gradients, with the kernel gradient computed through the strided convolution."""
    import flax.linen as nn

    from jaxvae.vae import conv

    rng = np.random.default_rng(k * 10 + s)
    x = jnp.asarray(rng.standard_normal((2, n, n + 1, 3)), jnp.float32)
    ref, new = nn.ConvTranspose(4, (k, k), (s, s)), conv.ConvTranspose(4, k, s)
    params = ref.init(jax.random.key(1), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, new.init(jax.random.key(1), x))
    g = jnp.asarray(rng.standard_normal((2, n * s, (n + 1) * s, 4)), jnp.float32)

    @jax.jit
    def both(params, x):
        f = lambda m: lambda p, x: jnp.sum(m.apply(p, x) * g)  # noqa: E731
        return (ref.apply(params, x), new.apply(params, x), jax.grad(f(ref), (0, 1))(params, x),
                jax.grad(f(new), (0, 1))(params, x))

    y_ref, y_new, g_ref, g_new = both(params, x)
    np.testing.assert_array_equal(y_ref, y_new)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5), g_ref, g_new)
