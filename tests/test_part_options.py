"""Options by part (issue 27 item 6): a flow's or a prior's options are the fields of its dataclass, set in
the config under model.flow_options / model.prior_options; workdirs written with the old flat fields
(model.flow_hidden, model.prior_components, ...) still resume and load. No training, no compiled program."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import pytest

from jaxvae.experiment.building import build_model
from jaxvae.experiment.configs import RENAMED, base_config, upgrade_config_dict
from jaxvae.experiment.validation import ConfigError, describe_flag_error, override, validate_config
from jaxvae.vae.model import VAE
from jaxvae.vae.registry import FLOWS, PRIORS, register_flow

OLD_CONFIG = Path(__file__).parent / "data" / "old_config.json"


def _same_meaning_new_layout():
    """The config tests/data/old_config.json was written from (by the code before the option blocks:
    base_config() with these fields set, its config_fingerprint dumped), in today's spelling."""
    c = base_config()
    c.model.update(flow="iaf", flow_length=2, prior="vampprior")
    c.model.flow_options.update(hidden=(32,), context=4, head_scale=0.1)
    c.model.prior_options.components = 50
    return c


def test_old_config_json_upgrades_to_the_new_layout_with_the_same_meaning():
    from jaxvae.experiment.workdir import config_fingerprint, with_defaults

    old = json.loads(OLD_CONFIG.read_text())
    assert old["model"]["flow_hidden"] == [32] and "flow_options" not in old["model"]  # the old layout
    kept = json.loads(json.dumps(old))
    up = upgrade_config_dict(old)
    assert old == kept  # the argument is not changed
    assert not {k.split(".", 1)[1] for k in RENAMED} & set(up["model"])
    assert up["model"]["flow_options"] == {"init_scale": 0.001, "head_scale": 0.1, "hidden": [32], "context": 4,
                                           "variant": "orthogonal", "columns": 0, "reflections": 4}
    assert up["model"]["prior_options"] == {"components": 50, "init_from": "data"}
    new = json.loads(json.dumps(config_fingerprint(_same_meaning_new_layout())))
    assert upgrade_config_dict(new) == new  # today's layout comes back unchanged
    # a resumed run: the saved old fingerprint (fields added since filled with defaults) equals today's
    assert with_defaults(old) == new
    # the model built from either is the same (same structure, same options -> same parameters)
    up_config = override(base_config(), {k: tuple(v) if isinstance(v, list) else v
                                         for k, v in _flat(upgrade_config_dict(old)).items()})
    assert build_model(up_config, 64) == build_model(_same_meaning_new_layout(), 64)


def test_load_run_reads_an_old_config_json(tmp_path):
    """load_run's config (run._read_config) of a workdir whose config.json has the old flat fields."""
    from jaxvae.experiment import run

    (tmp_path / "config.json").write_text(OLD_CONFIG.read_text())
    config = run._read_config(tmp_path)
    want = _same_meaning_new_layout()
    assert config.model.to_dict() == want.model.to_dict()
    validate_config(config)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_old_spelling_is_one_line_naming_the_new_field():
    with pytest.raises(ConfigError, match=r"'model.flow_hidden' is now 'model.flow_options.hidden'"):
        override(base_config(), {"model.flow_hidden": (3,)})
    c = base_config()
    c.model.prior_components = 5  # an experiment file in the old spelling
    with pytest.raises(ConfigError, match=r"'model.prior_components' is now 'model.prior_options.components'") as e:
        validate_config(c)
    assert "\n" not in str(e.value)
    msg = describe_flag_error(ValueError("flag error"), ["main", "--config.model.sylvester_variant=householder"])
    assert msg == "config field 'model.sylvester_variant' is now 'model.flow_options.variant'"


def test_a_custom_flows_option_is_one_field():
    """A custom flow's new option is one dataclass field: the config's model.flow_options reaches it
    (experiment file, command-line override, sweep), its type and its own check are validated, and a
    misspelt option name is one line listing the known ones."""

    @register_flow("scaled_shift_test")
    @dataclasses.dataclass(frozen=True)
    class ScaledShift:
        scale: float = 1.0  # the option: nothing else names it

        def __post_init__(self):
            if self.scale <= 0:
                raise ValueError(f"scale={self.scale} must be > 0")

        def param_shapes(self, dim):
            return {"b": (dim,)}

        def layer(self, params, z):
            return z + self.scale * params["b"], jnp.zeros(z.shape[:-1])

    try:
        c = base_config()
        c.model.update(flow="scaled_shift_test", flow_length=2)
        validate_config(c)
        assert build_model(c, 12).flow_part == ScaledShift()  # the field's default
        c.model.flow_options.scale = 0.5  # as an experiment file sets it
        validate_config(c)
        assert build_model(c, 12).flow_part.scale == 0.5
        swept = override(c, {"model.flow_options.scale": 0.25})  # a sweep's / load_run's override
        validate_config(swept)
        assert build_model(swept, 12).flow_part.scale == 0.25
        assert FLOWS.options_of("scaled_shift_test") == {"init_scale": 1e-3, "head_scale": 1.0, "scale": 1.0}
        for value, words in (("big", "model.flow_options.scale='big' has type str"),
                             (-1.0, "model.flow='scaled_shift_test' with model.flow_options: scale=-1.0 must be > 0")):
            bad = override(c, {"model.flow_options.scale": value})
            with pytest.raises(ConfigError, match=words) as e:
                validate_config(bad)
            assert "\n" not in str(e.value)
        typo = override(c, {"model.flow_options.scael": 0.5})
        with pytest.raises(ConfigError) as e:
            validate_config(typo)
        msg = str(e.value)
        assert "\n" not in msg and "model.flow_options.scael is not an option of any registered flow" in msg
        assert "model.flow='scaled_shift_test' takes head_scale, init_scale, scale" in msg
        assert "did you mean model.flow_options.scale?" in msg
    finally:
        FLOWS._entries.pop("scaled_shift_test", None)


def test_built_in_options_have_one_default_in_base_config():
    """base_config's option blocks are the built-in parts' options with the parts' defaults (an option
    name means one thing: parts sharing it share its default)."""
    c = base_config().model
    flows = {n: FLOWS.options_of(n) for n in ("planar", "radial", "iaf", "sylvester")}
    priors = {n: PRIORS.options_of(n) for n in ("standard_normal", "vampprior", "mog")}
    for block, parts in ((c.flow_options.to_dict(), flows), (c.prior_options.to_dict(), priors)):
        union = {}
        for opts in parts.values():
            for k, v in opts.items():
                assert union.setdefault(k, v) == v, k
        assert block == union


def test_vae_options_are_hashable_and_checked():
    a = VAE(x_dim=4, latent_dim=2, flow="iaf", flow_length=1, flow_options={"hidden": [3], "context": 1})
    b = VAE(x_dim=4, latent_dim=2, flow="iaf", flow_length=1, flow_options=(("context", 1), ("hidden", (3,))))
    assert a == b and hash(a) == hash(b) and a.flow_options == (("context", 1), ("hidden", (3,)))
    assert a.flow_part.hidden == (3,) and a.flow_part.context == 1
    assert VAE(x_dim=4, latent_dim=2, prior="mog").prior_part.components == 500  # as before the blocks
    with pytest.raises(ValueError, match="model.prior_options.componets is not an option of any registered prior"):
        VAE(x_dim=4, latent_dim=2, prior="mog", prior_options={"componets": 3})
