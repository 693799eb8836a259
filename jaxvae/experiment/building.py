"""Building a run from its config: the data (``load_data``) and the model (``build_model``), with the
decoder's output bias from the data (``output_bias``)."""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np

from jaxvae import data as data_lib
from jaxvae.experiment.configs import RENAMED, upgrade_config_dict
from jaxvae.vae.model import VAE

SLOW_LOAD_ENV = "JAXVAE_TEST_SLOW_LOAD_S"  # test hook: delay data loading (never set it in real runs)


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    d = config.data
    if os.environ.get(SLOW_LOAD_ENV):
        time.sleep(float(os.environ[SLOW_LOAD_ENV]))
    return data_lib.load_dataset(
        d.name, data_dir=d.data_dir or None, manual_dir=d.manual_dir or None, download=d.download,
        valid_size=d.valid_size or None, image_key=d.image_key, binarize=d.binarize, seed=config.seed)


def build_model(config: ml_collections.ConfigDict, x_dim: int, image_shape=None) -> VAE:
    """The VAE of ``config.model``; ``image_shape`` (H, W, C) gives it image-shaped inputs when a conv
    network or a channel-coupled likelihood needs them (jaxvae.vae.conv.image_fields). A config in the
    flat layout of older workdirs (model.flow_hidden, ...) is read as ``upgrade_config_dict`` maps it."""
    if any(old.split(".", 1)[1] in config.model for old in RENAMED):
        config = ml_collections.ConfigDict(upgrade_config_dict(config.to_dict()))
    m = config.model
    if int(m.get("stochastic_layers", 1)) > 1:
        from jaxvae.vae.hierarchical import HierarchicalVAE

        return HierarchicalVAE(
            x_dim=x_dim, latent_dims=tuple(int(d) for d in m.latent_dims),
            encoder_hidden=tuple(m.encoder_hidden), decoder_hidden=tuple(m.decoder_hidden),
            upper_hidden=tuple(m.upper_hidden), activation=m.activation, likelihood=m.likelihood,
            obs_variance=float(m.obs_variance), decoder_output_act=m.decoder_output_act)
    from jaxvae.vae.conv import image_fields

    return VAE(
        x_dim=x_dim, latent_dim=m.latent_dim, encoder_hidden=tuple(m.encoder_hidden),
        decoder_hidden=tuple(m.decoder_hidden), activation=m.activation, likelihood=m.likelihood,
        obs_variance=float(m.obs_variance), decoder_output_act=m.decoder_output_act, flow=m.flow,
        flow_length=int(m.flow_length), amortized_flow=bool(m.amortized_flow), prior=m.prior,
        compute_dtype=m.compute_dtype, flow_options=part_options(m, "flow_options"),
        prior_options=part_options(m, "prior_options"), **image_fields(m, image_shape))


def part_options(m: ml_collections.ConfigDict, block: str) -> dict:
    """The options block ``model.<block>`` (flow_options / prior_options) as a dict, passed to the VAE as it
    is: each part takes the options it declares (jaxvae.vae.registry.build)."""
    options = m.get(block)
    return {} if options is None else dict(options.to_dict() if hasattr(options, "to_dict") else options)


def output_bias(config: ml_collections.ConfigDict, model: VAE, train_x: np.ndarray):
    """Decoder output bias from the data (Burda et al. 2015): pixel log-odds for Bernoulli and sigmoid
    means, the pixel mean for an identity-output Gaussian."""
    if not config.model.init_output_bias:
        return None
    how = getattr(model.likelihood_part, "bias_from_data", None)
    if how == "logits" or model.decoder_output_act == "sigmoid":
        return data_lib.pixel_logits(train_x)
    if how == "mean" and model.decoder_output_act == "identity":
        return np.mean(train_x, axis=0)
    return None


def is_linear_gaussian(model: VAE) -> bool:
    return (model.likelihood_name == "gaussian" and model.prior == "standard_normal" and not model.decoder_hidden and not model.has_flow
            and model.decoder_output_act == "identity" and getattr(model, "stochastic_layers", 1) == 1)
