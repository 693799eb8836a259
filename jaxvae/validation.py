"""Config validation before any compute: each problem is one line naming the field and what is allowed."""

from __future__ import annotations

import difflib

import ml_collections

from jaxvae.configs import base_config

CHOICES = {
    "data.binarize": ("none", "static", "dynamic"),
    "model.likelihood": ("bernoulli", "gaussian", "gaussian_learned"),
    "model.flow": ("none", "planar", "radial"),
    "model.activation": ("tanh", "relu", "elu", "gelu", "softplus", "sigmoid", "identity"),
    "model.decoder_output_act": ("identity", "sigmoid", "tanh", "softplus"),
    "objective.name": ("elbo", "elbo_stl", "iwae", "iwae_dreg"),
    "train.schedule": ("constant", "iwae"),
    "train.nan_policy": ("stop", "skip"),
}
DATASETS = ("digits", "binarized_mnist", "mnist", "fashion_mnist", "tfds:<name>")

# field -> (lowest allowed, exclusive?) ; checked for numbers
MINIMUM = {
    "objective.k": (1, False), "train.batch_size": (1, False), "eval.batch_size": (1, False),
    "eval.chunk_size": (1, False), "eval.valid_k": (1, False), "objective.beta": (0, False),
    "model.obs_variance": (0, True), "model.flow_length": (0, False), "model.latent_dim": (1, False),
    "train.learning_rate": (0, True), "train.num_epochs": (0, True), "train.budget": (0, True),
    "train.grad_clip_norm": (0, False), "objective.kl_warmup_steps": (0, False),
    "train.steps_per_dispatch": (0, False), "train.log_every_steps": (1, False),
    "train.keep_checkpoints": (1, False), "train.eval_every_epochs": (0, False),
    "train.checkpoint_every_epochs": (0, False), "eval.max_examples": (0, False),
    "eval.valid_examples": (0, False), "eval.surgery_samples": (1, False), "data.valid_size": (0, False),
    "train.adam_eps": (0, True),
}


class ConfigError(ValueError):
    """An invalid config; the message names the field and the allowed values."""


def _flatten(c, prefix=""):
    out = {}
    for k, v in c.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _type_ok(default, value) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line per problem) for unknown fields, wrong types and bad values."""
    known = _flatten(base_config())
    given = _flatten(config)
    problems = []
    for field, value in given.items():
        if field not in known:
            guess = difflib.get_close_matches(field, known, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            problems.append(f"unknown config field {field!r}{hint}")
            continue
        default = known[field]
        if not _type_ok(default, value):
            problems.append(f"{field}={value!r} has type {type(value).__name__}; "
                            f"expected {type(default).__name__} (like {default!r})")
            continue
        if field in CHOICES and value not in CHOICES[field]:
            problems.append(f"{field}={value!r} is not one of {', '.join(CHOICES[field])}")
        if field in MINIMUM:
            low, exclusive = MINIMUM[field]
            if value < low or (exclusive and value == low):
                problems.append(f"{field}={value!r} must be {'>' if exclusive else '>='} {low}")
    name = given.get("data.name", "")
    if isinstance(name, str) and not (name in DATASETS[:-1] or (name.startswith("tfds:") and len(name) > 5)):
        problems.append(f"data.name={name!r} is not one of {', '.join(DATASETS)}")
    for field in ("eval.ks", "model.encoder_hidden", "model.decoder_hidden"):
        value = given.get(field, ())
        if isinstance(value, (tuple, list)):
            bad = [v for v in value if not isinstance(v, int) or isinstance(v, bool) or v < 1]
            if bad or (field == "eval.ks" and not value):
                problems.append(f"{field}={tuple(value)!r} must be a non-empty list of integers >= 1"
                                if field == "eval.ks" else f"{field}={tuple(value)!r} must hold integers >= 1")
    obj, flow = given.get("objective.name"), given.get("model.flow")
    if obj in ("elbo_stl", "iwae_dreg") and flow != "none" and given.get("model.flow_length", 0) > 0:
        problems.append(f"objective.name={obj!r} needs a Gaussian posterior; set model.flow='none' "
                        "or use objective.name='elbo' or 'iwae' with flows")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
