"""train.init_from (jaxvae.experiment.init_from): a run starts from another run's checkpointed parameters
with a fresh optimizer (Burda et al. 2015, Table 2); a model that does not fit is one clear error."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from jaxvae.experiment import init_from
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.checkpoints import Checkpoints
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.building import build_model
from jaxvae.experiment.workdir import config_fingerprint as _config_fingerprint


def _config(**model):
    c = base_config()
    c.model.latent_dim = 3
    c.model.encoder_hidden = (5,)
    c.model.decoder_hidden = (5,)
    for k, v in model.items():
        setattr(c.model, k, v)
    return c


def _source(tmp_path, config):
    """A source workdir with step 1 (the best, valid bound -90) and step 2 (latest, no validation)."""
    model = build_model(config, 16)
    tx = optax.adam(1e-3)
    src = tmp_path / "source"
    ck = Checkpoints(src)
    states = {}
    for step, seed in ((1, 11), (2, 12)):
        s = train_lib.create_train_state(model, tx, seed)
        s = s._replace(step=np.int32(step))
        ck.save(step, s._asdict(), -90.0 if step == 1 else None)
        states[step] = s
    ck.close()
    (src / "config.json").write_text(json.dumps(_config_fingerprint(config)))
    return src, states, model, tx


@pytest.mark.parametrize("which, step", [("best", 1), ("latest", 2)])
def test_init_from_restores_the_source_parameters_exactly(tmp_path, which, step):
    config = _config(stochastic_layers=2, latent_dims=(3, 2), upper_hidden=(4,))
    src, states, model, tx = _source(tmp_path, config)
    config.train.init_from = str(src)
    config.train.init_checkpoint = which
    fresh = train_lib.create_train_state(model, tx, 0)
    got = init_from.apply(config, fresh, tx, log=lambda s: None)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got.params, states[step].params)
    assert jax.tree.all(same)
    assert jax.tree.structure(got.params) == jax.tree.structure(fresh.params)
    # a fresh optimizer (zero moments, count 0) and this run's own step and key
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got.opt_state, tx.init(got.params)))
    assert int(got.step) == 0 and np.array_equal(got.key, fresh.key)


def test_init_from_shape_mismatch_names_both_configs(tmp_path):
    src, _, _, _ = _source(tmp_path, _config())
    other = _config(latent_dim=4)
    other.train.init_from = str(src)
    model = build_model(other, 16)
    tx = optax.adam(1e-3)
    with pytest.raises(init_from.InitFromError) as e:
        init_from.apply(other, train_lib.create_train_state(model, tx, 0), tx)
    msg = str(e.value)
    assert "shape" in msg and str(src / "config.json") in msg and "model.latent_dim (3 in" in msg and "4 here" in msg


def test_init_from_without_checkpoints_is_a_clear_error(tmp_path):
    c = _config()
    c.train.init_from = str(tmp_path / "nothing")
    model = build_model(c, 16)
    tx = optax.adam(1e-3)
    with pytest.raises(init_from.InitFromError, match="no checkpoints folder"):
        init_from.apply(c, train_lib.create_train_state(model, tx, 0), tx)
