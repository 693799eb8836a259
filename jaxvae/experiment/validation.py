"""Config validation before any compute: each problem is one line naming the field and what is allowed."""

from __future__ import annotations

import difflib
import math
import re
import types

import ml_collections

from jaxvae.experiment.configs import base_config, flatten, renamed_message
from jaxvae.experiment.tracking import WANDB_MODES, config_problems

CHOICES = {
    "data.binarize": ("none", "static", "dynamic"),
    "model.activation": ("tanh", "relu", "elu", "gelu", "softplus", "sigmoid", "identity"),
    "model.decoder_output_act": ("identity", "sigmoid", "tanh", "softplus"),
    "train.schedule": ("constant", "iwae"),
    "model.network": ("mlp", "conv", "resnet", "gated"),  # = jaxvae.vae.conv.NETWORKS (tested)
    "model.normalization": ("none", "layer", "group"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "train.nan_policy": ("stop", "skip"),
    "eval.ais.init": ("encoder", "prior"),
    "eval.ais.schedule": ("sigmoid", "linear"),
    "eval.bdmc.init": ("prior", "encoder"),
    "tracking.wandb_mode": WANDB_MODES,
    "train.init_checkpoint": ("best", "latest"),
    "model.flow_options.variant": ("orthogonal", "householder", "triangular"),  # = flows.SYLVESTER_VARIANTS
    "model.prior_options.init_from": ("data", "random"),
}
DATASETS = ("digits", "toy_3x3", "factors_toy", "dsprites", "binarized_mnist", "mnist", "fashion_mnist", "omniglot",
            "cifar10", "tfds:<name>")

# field -> (lowest allowed, exclusive?) ; checked for numbers
MINIMUM = {
    "objective.k": (1, False), "objective.m": (1, False), "objective.beta_ciwae": (0, False), "train.batch_size": (1, False), "eval.batch_size": (1, False),
    "eval.chunk_size": (1, False), "eval.valid_k": (1, False), "objective.beta": (0, False),
    "model.obs_variance": (0, True), "model.flow_length": (0, False), "model.latent_dim": (1, False),
    "train.learning_rate": (0, True), "train.num_epochs": (0, True), "train.budget": (0, True),
    "train.grad_clip_norm": (0, False), "objective.kl_warmup_steps": (0, False),
    "train.steps_per_dispatch": (0, False), "train.log_every_steps": (1, False),
    "train.keep_checkpoints": (1, False), "train.eval_every_epochs": (0, False),
    "train.checkpoint_every_epochs": (0, False), "eval.max_examples": (0, False),
    "eval.valid_examples": (0, False), "eval.surgery_samples": (1, False), "data.valid_size": (0, False),
    "train.adam_eps": (0, True), "train.adam_b1": (0, False), "train.adam_b2": (0, False),
    "parallel.num_devices": (0, False), "parallel.num_processes": (1, False), "parallel.process_id": (0, False),
    "parallel.member_shards": (0, False), "model.stochastic_layers": (1, False),
    "eval.train_examples": (0, False), "eval.binarize_seed": (-1, False),
    "model.conv_kernel": (1, False), "model.num_mixtures": (1, False),
    "model.flow_options.init_scale": (0, False), "model.flow_options.head_scale": (0, True),
    "model.flow_options.context": (0, False), "model.flow_options.columns": (0, False),
    "model.flow_options.reflections": (1, False), "model.flow_options.iterations": (1, False),
    "model.prior_options.components": (1, False),
    "eval.ais.examples": (0, False), "eval.ais.num_steps": (1, False), "eval.ais.chains": (1, False),
    "eval.ais.leapfrog_steps": (1, False), "eval.ais.step_size": (0, True), "eval.ais.target_accept": (0, True),
    "eval.ais.adapt_rate": (0, False), "eval.ais.batch_size": (1, False), "eval.bdmc.examples": (0, False),
    "eval.bdmc.num_steps": (1, False), "eval.bdmc.chains": (1, False), "eval.gaps.examples": (0, False),
    "eval.gaps.samples": (1, False), "eval.gaps.eval_samples": (1, False), "eval.gaps.learning_rate": (0, True),
    "eval.gaps.max_steps": (1, False), "eval.gaps.check_every": (1, False), "eval.gaps.tol": (0, False),
    "eval.gaps.batch_size": (1, False),
}
# field -> (highest allowed, exclusive?)
MAXIMUM = {"train.adam_b1": (1, True), "train.adam_b2": (1, True), "objective.beta_ciwae": (1, False),
           "eval.ais.target_accept": (1, True)}


class ConfigError(ValueError):
    """An invalid config; the message names the field and the allowed values."""


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
    given = flatten(config)
    problems = import_modules(given.get("imports", ()))  # first: they may register parts with options
    known = {**part_option_fields(), **flatten(base_config())}
    registered = registered_choices()
    for field, value in given.items():
        if field.startswith(FREE_FORM):
            continue
        if field not in known:
            guess = difflib.get_close_matches(field, known, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            problems.append(_unknown_option_message(field, given) or renamed_message(field)
                            or f"unknown config field {field!r}{hint}")
            continue
        default = known[field]
        if not _type_ok(default, value):
            problems.append(f"{field}={value!r} has type {type(value).__name__}; "
                            f"expected {type(default).__name__} (like {default!r})")
            continue
        if field in CHOICES and value not in CHOICES[field]:
            problems.append(f"{field}={value!r} is not one of {', '.join(CHOICES[field])}")
        if field in registered and value not in registered[field]:
            problems.append(f"{field}={value!r} is not one of {', '.join(registered[field])}; add your own "
                            f"with jaxvae.register_{field.split('.')[-1].replace('name', 'objective')} in "
                            "the experiment file or a module listed in --config.imports")
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{field}={value!r} must be a finite number")
            continue
        if field in MINIMUM:
            low, exclusive = MINIMUM[field]
            if value < low or (exclusive and value == low):
                problems.append(f"{field}={value!r} must be {'>' if exclusive else '>='} {low}")
        if field in MAXIMUM:
            high, exclusive = MAXIMUM[field]
            if value > high or (exclusive and value == high):
                problems.append(f"{field}={value!r} must be {'<' if exclusive else '<='} {high}")
    if problems:  # the checks across fields below assume each field has its type (e.g. a tuple, not None)
        raise ConfigError(_invalid(problems))
    name = given.get("data.name", "")
    if isinstance(name, str) and not (name in DATASETS[:-1] or (name.startswith("tfds:") and len(name) > 5)):
        problems.append(f"data.name={name!r} is not one of {', '.join(DATASETS)}")
    problems += _hierarchy_problems(given)
    for field in ("eval.ks", "model.encoder_hidden", "model.decoder_hidden", "model.latent_dims",
                  "model.upper_hidden", "model.conv_widths", "model.conv_strides",
                  "model.flow_options.hidden"):
        value = given.get(field, ())
        if isinstance(value, (tuple, list)):
            bad = [v for v in value if not isinstance(v, int) or isinstance(v, bool) or v < 1]
            if bad or (field in ("eval.ks", "model.flow_options.hidden") and not value):
                problems.append(f"{field}={tuple(value)!r} must be a non-empty list of integers >= 1"
                                if field in ("eval.ks", "model.flow_options.hidden")
                                else f"{field}={tuple(value)!r} must hold integers >= 1")
    if given.get("model.network", "mlp") != "mlp" and len(given.get("model.conv_widths", ())) != len(
            given.get("model.conv_strides", ())):
        problems.append(f"model.conv_widths={tuple(given.get('model.conv_widths', ()))!r} and model.conv_strides="
                        f"{tuple(given.get('model.conv_strides', ()))!r} must have the same length (one per stage)")
    if given.get("model.network", "mlp") != "mlp" and given.get("model.compute_dtype", "float32") != "float32":
        problems.append("model.compute_dtype='bfloat16' is for MLP networks; conv networks run in float32 "
                        "(set model.compute_dtype='float32')")
    obj, flow = given.get("objective.name"), given.get("model.flow")
    if obj in ("elbo_stl", "iwae_dreg", "rws", "rws_dreg") and flow != "none" and given.get("model.flow_length", 0) > 0:
        problems.append(f"objective.name={obj!r} needs a Gaussian posterior; set model.flow='none' "
                        "or use objective.name='elbo' or 'iwae' with flows")
    problems += _tighter_bound_problems(given)
    if (given.get("eval.bdmc.init") == "encoder" and given.get("eval.bdmc.examples", 0) > 0
            and given.get("model.flow") != "none" and given.get("model.flow_length", 0) > 0):
        problems.append("eval.bdmc.init='encoder' needs a Gaussian posterior (reverse AIS would need the "
                        "flow's inverse); use eval.bdmc.init='prior' with flows")
    problems += config_problems(config)  # the package of each tracker turned on
    columns, latent = given.get("model.flow_options.columns", 0), given.get("model.latent_dim", 1)
    if isinstance(columns, int) and isinstance(latent, int) and columns > latent:
        problems.append(f"model.flow_options.columns={columns} must be <= model.latent_dim={latent} "
                        "(Q has orthonormal columns); 0 = latent_dim")
    if problems:
        raise ConfigError(_invalid(problems))
    problems += _part_problems(config)
    if problems:
        raise ConfigError(_invalid(problems))


def part_option_fields() -> dict:
    """{model.flow_options.<name> / model.prior_options.<name>: default} for every option a registered flow
    or prior declares (custom parts' included: jaxvae.vae.registry.declared_options)."""
    from jaxvae.vae import model as _model  # noqa: F401 - registers the built-in parts
    from jaxvae.vae.registry import FLOWS, PRIORS

    return {f"{r.options_field}.{name}": default for r in (FLOWS, PRIORS)
            for name, default in r.known_options().items()}


def _unknown_option_message(field: str, given: dict) -> str | None:
    """The registry's one line for a name under model.flow_options / model.prior_options that no
    registered part declares (with the configured part's options); None for other fields."""
    from jaxvae.vae.registry import FLOWS, PRIORS

    for registry in (FLOWS, PRIORS):
        prefix = registry.options_field + "."
        if field.startswith(prefix):
            return registry.unknown_option(field[len(prefix):], given.get(registry.config_field))
    return None


def _part_problems(config: ml_collections.ConfigDict) -> list[str]:
    """The configured flow and prior built with their options: a part's own checks (a ValueError in its
    constructor, e.g. a custom part's range check) as one line each."""
    from jaxvae.experiment.building import part_options
    from jaxvae.vae.registry import FLOWS, PRIORS, options_for

    problems = []
    m = config.model
    for registry, name, block in ((FLOWS, m.get("flow", "none"), "flow_options"),
                                  (PRIORS, m.get("prior", "standard_normal"), "prior_options")):
        if not isinstance(name, str) or name not in registry:
            continue
        entry = registry.get(name)
        if not isinstance(entry, type) or hasattr(entry, "from_model"):
            continue
        try:
            entry(**options_for(registry, entry, types.SimpleNamespace(**{block: part_options(m, block)})))
        except (ValueError, TypeError) as e:
            problems.append(f"{registry.config_field}={name!r} with {registry.options_field}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return problems


def _hierarchy_problems(given: dict) -> list[str]:
    """model.stochastic_layers > 1 (jaxvae.vae.hierarchical): one size per layer, no flow, an N(0, I) prior."""
    layers = given.get("model.stochastic_layers", 1)
    dims = given.get("model.latent_dims", ())
    if not isinstance(layers, int) or layers <= 1:
        if isinstance(dims, (tuple, list)) and len(dims) > 1:
            return [f"model.latent_dims={tuple(dims)!r} has {len(dims)} sizes but model.stochastic_layers="
                    f"{layers!r}; set model.stochastic_layers={len(dims)} or leave model.latent_dims=()"]
        return []
    problems = []
    if not isinstance(dims, (tuple, list)) or len(dims) != layers:
        problems.append(f"model.stochastic_layers={layers} needs model.latent_dims with {layers} sizes "
                        f"(z_1 first, e.g. (100, 50)); got {dims!r}")
    if given.get("model.flow", "none") != "none" and given.get("model.flow_length", 0) > 0:
        problems.append("model.stochastic_layers > 1 has Gaussian layers only; set model.flow='none'")
    if given.get("model.prior", "standard_normal") != "standard_normal":
        problems.append("model.stochastic_layers > 1 uses p(z_L) = N(0, I); set model.prior='standard_normal'")
    return problems


def _tighter_bound_problems(given: dict) -> list[str]:
    """objective.m and objective.beta_ciwae have a meaning only for the objectives that read them."""
    obj, out = given.get("objective.name"), []
    m = given.get("objective.m", 1)
    if isinstance(m, int) and m != 1 and obj not in ("miwae", "piwae"):
        out.append(f"objective.m={m} applies only to objective.name='miwae' or 'piwae' (got {obj!r}); "
                   "leave it at 1 or use objective.k for the number of samples")
    b = given.get("objective.beta_ciwae", 0.5)
    if isinstance(b, (int, float)) and b != 0.5 and obj != "ciwae":
        out.append(f"objective.beta_ciwae={b} applies only to objective.name='ciwae' (got {obj!r}); "
                   "objective.beta is the KL weight of the other objectives")
    return out


FREE_FORM = ("objective.options.",)  # fields a custom objective declares; not checked against the defaults
# the parts' option blocks: checked against the options the registered parts declare (validate_config)
OPTION_BLOCKS = ("model.flow_options.", "model.prior_options.")


def import_modules(modules) -> list[str]:
    """Imports the modules of config.imports (they register parts and objectives); a problem line for
    each that fails."""
    import importlib

    problems = []
    if isinstance(modules, str):
        modules = (modules,)
    if modules and (not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules)):
        return [f"imports: expected a module name or a list of module names, got {modules!r}; e.g. "
                "--config.imports='(\"mypkg.parts\",)'"]
    for name in modules or ():
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported as one config line
            problems.append(f"imports: cannot import {name!r} ({type(e).__name__}: {e}); check the module "
                            "name and that its folder is on PYTHONPATH")
    return problems


def registered_choices() -> dict[str, tuple[str, ...]]:
    """The names the registries know now (built-ins plus what experiment files and imports added)."""
    from jaxvae.vae import model as _model  # noqa: F401 - registers the built-in parts
    from jaxvae.vae import objectives as _objectives  # noqa: F401 - registers the built-in objectives
    from jaxvae.vae.registry import FLOWS, LIKELIHOODS, OBJECTIVES, PRIORS

    return {"model.likelihood": LIKELIHOODS.names(), "model.flow": ("none",) + FLOWS.names(),
            "model.prior": PRIORS.names(), "objective.name": OBJECTIVES.names()}


def _invalid(problems: list[str]) -> str:
    """One problem: one line. Several: a header line and one indented line each."""
    if len(problems) == 1:
        return f"invalid config: {problems[0]}"
    return "invalid config:\n  " + "\n  ".join(problems)


def known_fields() -> dict:
    """Every config field (dotted path) with its default value."""
    return flatten(base_config())


def _unknown_field_message(field: str, known) -> str:
    renamed = renamed_message(field)
    if renamed:
        return renamed
    guess = difflib.get_close_matches(field, list(known), n=1)
    if not guess:  # a misspelt last part under a known section: compare within the section
        section, _, leaf = field.rpartition(".")
        inside = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
        close = difflib.get_close_matches(leaf, inside, n=1)
        guess = [f"{section}.{close[0]}"] if close else []
    hint = f"; did you mean {guess[0]!r}?" if guess else "; see jaxvae/configs.py for every field"
    return f"unknown config field {field!r}{hint}"


def override(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted-path ``overrides`` applied as given (no type coercion), for
    ``validate_config`` to judge; ConfigError for a field that does not exist."""
    known = known_fields()
    tree = config.to_dict()
    for field, value in overrides.items():
        if field not in known and not field.startswith(FREE_FORM + OPTION_BLOCKS):
            raise ConfigError(_invalid([_unknown_field_message(field, known)]))
        node = tree
        *parents, leaf = field.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return ml_collections.ConfigDict(tree)


def describe_flag_error(exc: BaseException, argv) -> str:
    """One line for a command-line error that absl/config_flags raised while parsing ``argv``:
    an unknown ``--config.x`` field (with a did-you-mean), a value of the wrong type, a bad config file."""
    known = known_fields()
    text = str(exc).strip()
    for arg in argv[1:]:
        if arg.startswith("--config.") and "=" in arg:
            field = arg[len("--config."):].partition("=")[0]
            if field not in known:
                return _unknown_field_message(field, known)
    m = re.search(r"--config\.([\w.]+)=(.*?): (.*)", text)
    if m and m.group(1) in known:
        field, value, reason = m.group(1), m.group(2), m.group(3).splitlines()[0]
        default = known[field]
        kind = "a list like (1, 5, 50)" if isinstance(default, tuple) else f"{type(default).__name__} (like {default!r})"
        if field in CHOICES:
            kind += f", one of {', '.join(CHOICES[field])}"
        return f"--config.{field}={value}: expected {kind} ({reason})"
    if "config file" in text.lower() or "error whilst parsing config" in text.lower():
        lines = [line for line in text.splitlines() if line.strip()]
        return f"cannot load the --config file: {lines[-1].strip() if lines else text}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.replace("FATAL Flags parsing error: ", "")


def check_data(config: ml_collections.ConfigDict, dataset) -> list[str]:
    """Checks the loaded data against the model before any compute.

    Raises DataError for data the run cannot use: splits of the wrong shape or an image size that does
    not match, non-finite values, an empty split, values outside [0, 1] for a Bernoulli decoder.
    Returns warnings (one line each): grey levels in [0, 1] with a Bernoulli decoder and
    data.binarize='none' are used as they are (the documented "soft targets" convention); the line
    suggests data.binarize='dynamic'.
    """
    import numpy as np

    from jaxvae.data import DataError

    name = config.data.name
    width = int(np.prod(dataset.image_shape))
    splits = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    for split, x in splits.items():
        if x.ndim != 2 or x.shape[1] != width:
            raise DataError(f"data.name={name!r}: the {split} split has shape {x.shape}; expected "
                            f"(N, {width}) for images of shape {tuple(dataset.image_shape)}")
        if x.size and not np.all(np.isfinite(x)):
            raise DataError(f"data.name={name!r}: the {split} split holds NaN or infinite values")
    for split in ("train", "test"):
        if not len(splits[split]):
            raise DataError(f"data.name={name!r}: the {split} split is empty")
    if not len(dataset.valid) and config.train.eval_every_epochs:
        raise DataError(f"data.name={name!r} has no validation examples; set data.valid_size > 0 or "
                        "train.eval_every_epochs=0")
    warnings = []
    if config.model.get("network", "mlp") != "mlp":
        from jaxvae.vae.conv import check_image_shape

        problem = check_image_shape(tuple(dataset.image_shape), tuple(config.model.conv_strides))
        if problem:
            raise DataError(f"data.name={name!r} with model.network={config.model.network!r}: {problem}")
    if str(config.model.likelihood).startswith("discretized_"):
        lo = min(float(x.min()) for x in splits.values() if x.size)
        hi = max(float(x.max()) for x in splits.values() if x.size)
        if lo < 0 or hi > 1:
            raise DataError(f"data.name={name!r} has values in [{lo:g}, {hi:g}] but model.likelihood="
                            f"{config.model.likelihood!r} needs 8-bit pixels k/255 in [0, 1]")
        if config.data.binarize != "none":
            raise DataError(f"model.likelihood={config.model.likelihood!r} models 8-bit pixels; set "
                            "data.binarize='none' (or use model.likelihood='bernoulli')")
    if config.model.likelihood == "bernoulli":
        lo = min(float(x.min()) for x in splits.values() if x.size)
        hi = max(float(x.max()) for x in splits.values() if x.size)
        if lo < 0 or hi > 1:
            raise DataError(
                f"data.name={name!r} has values in [{lo:g}, {hi:g}] but model.likelihood='bernoulli' needs "
                "values in [0, 1]; rescale the data to [0, 1] or use model.likelihood='gaussian'")
        if not dataset.is_binary and config.data.binarize == "none":
            warnings.append(
                f"data.name={name!r} has grey levels in [0, 1] and model.likelihood='bernoulli' with "
                "data.binarize='none': they are used as soft Bernoulli targets (the bound is then not "
                "a log-likelihood of binary data); set data.binarize='dynamic' (or 'static') for the "
                "standard binarized setting")
    return warnings
