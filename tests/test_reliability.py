"""Reliability: config errors before any compute, preemption and kill -9, corrupt checkpoints, numerical
faults, an unwritable or full disk, bad data. Subprocess runs use the helpers of tests/runhelpers.py and
the ``run_env``/``resume_reference`` fixtures of tests/conftest.py, as tests/test_runner.py does (one
compilation cache and one uninterrupted reference run per session).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runhelpers import (QUICKSTART, RESUME, ROOT, SMALL, assert_trees_equal, check_ok, cmd, load_checkpoint,
                        run_main, start_main, status, step_dirs, wait_for)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvae.experiment import building
from jaxvae.experiment import workdir as workdir_files
from jaxvae.experiment.protocol import EXIT_PREEMPTED
from jaxvae.experiment import validation
from jaxvae.experiment.checkpoints import CheckpointError, Checkpoints
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.validation import ConfigError, validate_config


# -- helpers -----------------------------------------------------------------------------------------------
def tmp_dirs(workdir) -> list[str]:
    d = Path(workdir) / "checkpoints" / "latest"
    return sorted(p.name for p in d.iterdir() if "orbax-checkpoint-tmp" in p.name) if d.is_dir() else []


def _experiment(name: str):
    spec = importlib.util.spec_from_file_location(f"_exp_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def small_config(name="quickstart", **overrides):
    config = _experiment(name)
    defaults = {"train.num_epochs": 1, "train.steps_per_dispatch": 2, "eval.ks": (1, 5, 50), "eval.max_examples": 100,
                "eval.valid_k": 5, "eval.valid_examples": 100, "eval.images": False,
                "train.checkpoint_every_epochs": 1, "train.log_every_steps": 2}
    config = validation.override(config, {**defaults, **overrides})
    validate_config(config)
    return config


# -- config validation --------------------------------------------------------------------------------
BAD_VALUES = [
    ("objective.k", 0, "objective.k=0 must be >= 1"),
    ("train.batch_size", 0, "train.batch_size=0 must be >= 1"),
    ("objective.beta", -0.5, "objective.beta=-0.5 must be >= 0"),
    ("model.obs_variance", 0.0, "model.obs_variance=0.0 must be > 0"),
    ("model.obs_variance", -1.0, "model.obs_variance=-1.0 must be > 0"),
    ("model.flow_length", -1, "model.flow_length=-1 must be >= 0"),
    ("eval.ks", (1, 0, 50), "eval.ks=(1, 0, 50) must be a non-empty list of integers >= 1"),
    ("eval.ks", (), "eval.ks=() must be a non-empty list"),
    ("objective.name", "vae", "objective.name='vae' is not one of ciwae, elbo, elbo_stl, iwae, iwae_dreg, miwae, piwae"),
    ("model.likelihood", "poisson", "model.likelihood='poisson' is not one of bernoulli, discretized_gaussian, "
                                    "discretized_logistic, discretized_logistic_mixture, gaussian, gaussian_learned"),
    ("model.flow", "maf", "model.flow='maf' is not one of none, iaf, planar, radial, sylvester"),
    ("data.name", "cifar", "data.name='cifar' is not one of digits, "),
    ("data.binarize", "yes", "data.binarize='yes' is not one of none, static, dynamic"),
    ("train.batch_sise", 20, "unknown config field 'train.batch_sise'; did you mean 'train.batch_size'?"),
    ("objectiv.k", 5, "did you mean 'objective.k'?"),
    ("train.batch_size", "20", "train.batch_size='20' has type str; expected int"),
    ("train.learning_rate", float("inf"), "train.learning_rate=inf must be a finite number"),
    ("train.learning_rate", float("nan"), "train.learning_rate=nan must be a finite number"),
    ("train.adam_b2", 1.0, "train.adam_b2=1.0 must be < 1"),
]


@pytest.mark.parametrize("field, value, message", BAD_VALUES)
def test_bad_config_value_gives_one_clear_line(field, value, message):
    with pytest.raises(ConfigError) as e:
        validate_config(validation.override(base_config(), {field: value}))
    lines = str(e.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid config: "), str(e.value)
    assert message in lines[0]


@pytest.mark.parametrize("field", ["model.conv_strides", "model.conv_widths", "model.flow_length"])
def test_a_wrongly_typed_field_is_a_config_error_before_the_checks_across_fields(field):
    """A conv net whose conv_strides is None (found by the override fuzzer in a fresh clone's CI run): one
    ConfigError line for the type, not a TypeError from the check that compares it with conv_widths."""
    config = validation.override(base_config(), {"model.network": "conv", "model.flow": "planar", field: None})
    with pytest.raises(ConfigError, match=rf"^invalid config: {field}=None has type NoneType; expected"):
        validate_config(config)


def test_every_experiment_config_is_valid():
    for path in sorted((ROOT / "experiments").glob("*.py")):
        validate_config(_experiment(path.stem))


def test_every_point_of_every_experiment_sweep_is_valid():
    """A sweep's overrides name real fields with valid values (a typo would fail only when its run starts)."""
    points = 0
    for path in sorted((ROOT / "experiments").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_sweep_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for point in (module.get_sweep() if hasattr(module, "get_sweep") else []):
            validate_config(validation.override(module.get_config(), dict(point)))
            points += 1
    assert points >= 170  # 2026-12-06: 170 points


def test_several_problems_are_all_reported():
    with pytest.raises(ConfigError) as e:
        validate_config(validation.override(base_config(), {"objective.k": 0, "model.flow": "x"}))
    assert len(str(e.value).splitlines()) == 3


BAD_COMMAND_LINES = [
    (["--config.train.batch_sise=3"], "did you mean 'train.batch_size'"),
    (["--config.bogus=1"], "unknown config field 'bogus'"),
    (["--config.train.batch_size=abc"], "--config.train.batch_size=abc: expected int"),
    (["--config.eval.images=maybe"], "--config.eval.images=maybe: expected bool"),
    (["--config.objective.k=0"], "objective.k=0 must be >= 1"),
    (["--config.objective.beta=-1"], "objective.beta=-1.0 must be >= 0"),
    (["--config.model.obs_variance=0"], "model.obs_variance=0.0 must be > 0"),
    (["--config.eval.ks=(1,0,50)"], "eval.ks=(1, 0, 50) must be a non-empty list"),
    (["--config.objective.name=vae"], "is not one of ciwae, elbo, elbo_stl, iwae, iwae_dreg, miwae"),
    (["--config.data.name=cifar100"], "data.name='cifar100' is not one of digits, "),
    (["--config=experiments/no_such_experiment.py"], "cannot load the --config file"),
]


def test_bad_command_lines_fail_cleanly_before_any_compute(run_env, tmp_path):
    """Each: exit code 2, one 'error:' line naming the field, no traceback, the workdir never created."""
    procs = []
    for i, (args, _) in enumerate(BAD_COMMAND_LINES):  # all at once: each only parses flags
        argv = cmd(tmp_path / f"w{i}", *args)
        if args[0].startswith("--config="):
            argv = [a for a in argv if a != f"--config={QUICKSTART}"]
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=run_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for i, ((args, message), proc) in enumerate(zip(BAD_COMMAND_LINES, procs)):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, out, err)
        assert "Traceback" not in err, (args, err)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (args, err)
        assert message in errors[0], (args, err)
        assert not (tmp_path / f"w{i}").exists()


# -- fuzz: random overrides never give anything but success or a ConfigError -----------------------------
KNOWN = validation.known_fields()
FIELDS = sorted(KNOWN) + ["train.batch_sise", "model.flows", "objective", "eval.k"]
CHOICE_WORDS = sorted({w for choices in validation.CHOICES.values() for w in choices}
                      | {"digits", "binarized_mnist", "mnist", "tfds:mnist", "tfds:", "", "x"})
ANY_VALUE = st.one_of(
    st.integers(-3, 300),
    st.floats(-1e3, 1e3) | st.sampled_from([0.0, float("nan"), float("inf"), -float("inf"), 1e-12]),
    st.booleans(),
    st.sampled_from(CHOICE_WORDS) | st.text(max_size=6),
    st.lists(st.integers(-2, 300), max_size=4).map(tuple),
    st.none(),
)
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py"))


def _value_for(field: str):
    """Any value at all, or (more often) one of the right type and plausible range for the field."""
    default = KNOWN.get(field)
    if field in validation.CHOICES:
        plausible = st.sampled_from(validation.CHOICES[field])
    elif field == "data.name":
        plausible = st.sampled_from(["digits", "binarized_mnist", "mnist", "tfds:mnist", "cifar"])
    elif isinstance(default, bool):
        plausible = st.booleans()
    elif isinstance(default, int):
        plausible = st.integers(0, 12)
    elif isinstance(default, float):
        plausible = st.floats(0.0, 3.0)
    elif isinstance(default, tuple):
        plausible = st.lists(st.integers(0, 12), max_size=3).map(tuple)
    else:
        return ANY_VALUE
    return st.one_of(plausible, plausible, plausible, ANY_VALUE)


@st.composite
def overrides(draw):
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True))
    return {f: draw(_value_for(f)) for f in fields}


def _build_pieces(config):
    """Everything a run builds from the config before it touches data or trains."""
    from jaxvae.experiment import building
    from jaxvae.experiment import train as train_lib
    from jaxvae.vae.objectives import make_loss_fn, objective_options

    model = building.build_model(config, 64, image_shape=(8, 8, 1))  # conv nets need the image shape
    schedule, total = train_lib.learning_rate_schedule(config, 7)
    assert total >= 1
    tx = train_lib.make_optimizer(config, schedule)
    state = jax.eval_shape(lambda: train_lib.create_train_state(model, tx, config.seed, None))
    loss_fn = make_loss_fn(model, config.objective.name, **objective_options(config.objective))
    x = jax.ShapeDtypeStruct((2, 64), jnp.float32)
    loss, _ = jax.eval_shape(loss_fn, state.params, x, jax.random.key(0), 1.0)
    assert loss.shape == ()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiment=st.sampled_from(EXPERIMENTS), changes=overrides())
def test_fuzz_overrides_give_success_or_config_error(experiment, changes):
    """Random overrides: validate_config accepts them and everything builds, or ConfigError."""
    changes.pop("parallel.num_devices", None)  # depends on the machine, checked when the mesh is built
    try:
        config = validation.override(_experiment(experiment), changes)
        validate_config(config)
    except ConfigError as e:
        assert str(e).startswith("invalid config:")
        return
    _build_pieces(config)


# -- numerical faults -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("k", [1, 50, 5000])
@pytest.mark.parametrize("center", [-3000.0, 0.0, 500.0])
def test_log_mean_exp_finite_for_spread_log_weights(dtype, k, center):
    """Log-weights spread over 400 nats, far outside exp's range: exact, finite, in f32 and bf16."""
    from scipy.special import logsumexp

    from jaxvae.vae.objectives import log_mean_exp

    rng = np.random.default_rng(k)
    log_w = jnp.asarray(center + rng.uniform(-400.0, 0.0, size=(k, 7)), dtype)
    got = log_mean_exp(log_w)
    assert got.dtype == jnp.float32  # bf16 inputs are upcast
    want = logsumexp(np.asarray(log_w.astype(jnp.float32), np.float64), axis=0) - math.log(k)
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6 * abs(center) + 1e-4)
    masked = log_w.at[: k // 2].set(-jnp.inf)  # masked samples (-inf) leave it finite
    assert np.all(np.isfinite(np.asarray(log_mean_exp(masked))))


def test_chunked_iwae_5000_exact_for_widely_spread_weights(linear_gaussian):
    """K = 5000 drawn in chunks (the last one masked when 5000 % chunk != 0) equals the float64
    log-mean-exp of the same draws, with a poor encoder that spreads log w over hundreds of nats."""
    from scipy.special import logsumexp

    from jaxvae.vae.evaluation import iwae_bound_chunked
    from jaxvae.vae.objectives import log_weights_from_posterior

    lg = linear_gaussian
    params = lg.params(mu_shift=6.0, logvar_shift=3.0)
    x = jnp.asarray(lg.x)
    key, chunk = jax.random.key(7), 512  # 10 chunks, the last one with 392 masked draws
    got = np.asarray(iwae_bound_chunked(lg.model, params, x, key, 5000, chunk), np.float64)

    @jax.jit
    def all_draws(keys):
        post = lg.model.encode(params, x)
        return jax.vmap(lambda k: log_weights_from_posterior(lg.model, params, x, post, k, chunk)[0])(keys)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(-(-5000 // chunk)))
    log_w = np.asarray(all_draws(keys), np.float64).reshape(-1, x.shape[0])[:5000]
    assert np.ptp(log_w, axis=0).min() > 100  # really spread over hundreds of nats
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, logsumexp(log_w, axis=0) - math.log(5000), rtol=1e-5, atol=1e-3)


# -- checkpoints: corrupt, partial, failing writes, changed model ----------------------------------------
STATE = {"params": {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, "step": np.array(0, np.int32)}


def _state(step):
    return {"params": {"w": STATE["params"]["w"] + step}, "step": np.array(step, np.int32)}


def _saved(tmp_path, steps=(1, 2, 3)) -> Path:
    c = Checkpoints(tmp_path, keep=5)
    for s in steps:
        c.save(s, _state(s), valid_bound=-float(s))
    c.close()
    return tmp_path


def _restore(workdir, template=STATE):
    c = Checkpoints(workdir)
    try:
        return c.restore_latest(template)
    finally:
        c.close()


def _corrupt(step_dir: Path, how: str) -> None:
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and "/d/" in p.as_posix())
    assert files
    for f in files:
        if how == "truncate":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        elif how == "delete":
            f.unlink()
        elif how == "garble":
            b = bytearray(f.read_bytes())
            b[len(b) // 2] ^= 0xFF
            f.write_bytes(bytes(b))
    if how == "metadata":
        (step_dir / "default" / "_METADATA").unlink()


def test_kill_between_best_and_latest_save_leaves_a_resumable_older_latest(tmp_path, monkeypatch):
    """A crash inside ``save`` after the best copy but before "latest": the relaunch resumes from the older
    latest step (and retrains to this one), never from a latest step whose best copy is missing."""
    c = Checkpoints(tmp_path, keep=5)
    c.save(1, _state(1), valid_bound=-1.0)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed between the two saves")

    monkeypatch.setattr(c.latest, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        c.save(2, _state(2), valid_bound=-0.5)
    assert c.best.all_steps() == [2] and c.latest.all_steps() == [1]
    c.close()
    monkeypatch.undo()
    state, step = _restore(tmp_path)
    assert step == 1 and int(state["step"]) == 1


@pytest.mark.parametrize("how", ["truncate", "delete", "garble", "metadata"])
def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog, how):
    _saved(tmp_path)
    _corrupt(tmp_path / "checkpoints" / "latest" / "3", how)
    c = Checkpoints(tmp_path, keep=5)
    with caplog.at_level(logging.WARNING, logger="jaxvae.experiment.checkpoints"):
        state, step = c.restore_latest(STATE)
    assert step == 2
    assert_trees_equal(state, _state(2))
    assert any("step 3" in r.getMessage() and "does not restore" in r.getMessage() for r in caplog.records)
    # moved out of the way, so the run can write step 3 again when it gets there
    assert [p.name.split("_")[:2] for p in (tmp_path / "checkpoints" / "corrupt").iterdir()] == [["latest", "3"]]
    c.save(3, _state(3))
    c.close()
    state, step = _restore(tmp_path)
    assert step == 3
    assert_trees_equal(state, _state(3))


def test_superseded_steps_left_by_a_kill_are_pruned_on_open(tmp_path):
    """A kill -9 between a save's commit and orbax's deletion of the step it replaces leaves one step too
    many (here written by managers that keep everything); opening the run's checkpoints prunes them as
    the next save would: the newest ``keep`` latest steps, the best step by its validation bound."""
    import orbax.checkpoint as ocp

    from jaxvae.experiment import checkpoints as C

    root = tmp_path / "checkpoints"
    for name, best in (("latest", False), ("best", True)):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, create=True, enable_async_checkpointing=False,
            best_fn=(lambda m: m["valid_bound"]) if best else None, best_mode="max")
        mngr = ocp.CheckpointManager((root / name).absolute(), options=options)
        for step, bound in ((27, -30.0), (54, -20.0), (81, -25.0)):
            extra = {"metrics": {"valid_bound": bound}} if best else {}
            mngr.save(step, args=ocp.args.StandardSave(_state(step)), **extra)
            mngr.wait_until_finished()
        mngr.close()
    c = C.Checkpoints(tmp_path, keep=2)
    assert c.latest.all_steps() == [54, 81] and c.best.all_steps() == [54]
    c.close()
    assert step_dirs(tmp_path) == [54, 81] and step_dirs(tmp_path, "best") == [54]


def test_progress_of_the_restored_checkpoint_survives_a_kill_between_progress_and_checkpoint(tmp_path):
    """progress.json is written before its checkpoint and keeps the earlier checkpoints' entries: a run
    killed after writing step 81's entry but before committing checkpoint 81 resumes from 54 with 54's
    time, examples and validation."""
    prior = workdir_files.load_progress(tmp_path, None)
    workdir_files.write_progress(tmp_path, 54, prior, 10.0, 8.0, 500, {"iwae": {"5": -25.0}})
    at54 = workdir_files.load_progress(tmp_path, 54)
    workdir_files.write_progress(tmp_path, 81, at54, 5.0, 4.0, 250, {"iwae": {"5": -24.0}})
    assert workdir_files.load_progress(tmp_path, 54) == at54 == {"step": 54, "wall_time_s": 10.0, "train_seconds": 8.0,
                                                      "trained_examples": 500, "valid": {"iwae": {"5": -25.0}}}
    assert workdir_files.load_progress(tmp_path, 81)["valid"] == {"iwae": {"5": -24.0}}
    assert workdir_files.load_progress(tmp_path, 81)["trained_examples"] == 750
    assert workdir_files.load_progress(tmp_path, 27)["trained_examples"] == 0  # no entry: nothing assumed


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    _saved(tmp_path, steps=(1,))
    _corrupt(tmp_path / "checkpoints" / "latest" / "1", "delete")
    with pytest.raises(CheckpointError, match="no checkpoint in .* restores .* new --workdir"):
        Checkpoints(tmp_path).restore_latest(STATE)
    assert step_dirs(tmp_path) == [1]  # nothing moved or deleted


def test_checkpoint_of_another_model_shape_is_refused(tmp_path):
    _saved(tmp_path)
    other = {"params": {"w": np.zeros((2, 4), np.float32)}, "step": np.array(0, np.int32)}
    with pytest.raises(CheckpointError, match=r"shape \(2, 3\) but this config's model needs \(2, 4\)"):
        Checkpoints(tmp_path).restore_latest(other)
    assert step_dirs(tmp_path) == [1, 2, 3]


@pytest.fixture
def failing_commit(monkeypatch):
    """Makes the commit (rename) of the given step folders raise 'No space left on device'."""
    from orbax.checkpoint._src.path import atomicity

    failing = set()
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self.get_final().name in failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    return failing


def test_failed_save_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, failing_commit):
    c = Checkpoints(tmp_path)
    c.save(1, _state(1))
    failing_commit.add("2")
    with pytest.raises(CheckpointError) as e:
        c.save(2, _state(2))
    c.close()
    message = str(e.value)
    assert "step 2" in message and "No space left on device" in message
    assert "last completed checkpoint is step 1" in message
    assert tmp_dirs(tmp_path)  # the partial write is left as a temporary folder, never as step 2
    state, step = _restore(tmp_path)
    assert step == 1
    assert_trees_equal(state, _state(1))


FULL_DISK_AT_54 = """
import errno, sys
from orbax.checkpoint._src.path import atomicity
original = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
    if self.get_final().name == "54":
        raise OSError(errno.ENOSPC, "No space left on device")
    return await original(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
from jaxvae.main import run
run()
"""


def test_disk_full_during_a_run_stops_it_cleanly(run_env, tmp_path):
    """The checkpoint write at step 54 fails (disk full, simulated in the commit of orbax's atomic
    write): exit 1, one clear line, status failed, the previous checkpoint (step 27) still restores."""
    work = tmp_path / "run"
    driver = tmp_path / "full_disk_main.py"
    driver.write_text(FULL_DISK_AT_54)
    argv = [sys.executable, str(driver), *cmd(work, *SMALL, "--config.train.num_epochs=2",
                                                "--config.eval.images=False")[3:]]
    p = subprocess.run(argv, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert "could not write the checkpoint of step 54" in errors[0]
    assert "No space left on device" in errors[0] and "last completed checkpoint is step 27" in errors[0]
    st = status(work)
    assert st["status"] == "failed" and st["step"] == 54
    assert step_dirs(work) == [27]
    load_checkpoint(work, 27)


def test_unwritable_workdir_is_reported_before_training(tmp_path, capsys):
    from jaxvae.experiment.runner import main_entry

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = small_config()
    assert main_entry(config, blocker / "run") == 1  # root can write anywhere, but not under a file
    err = capsys.readouterr().err
    assert err.startswith("error: workdir") and "is not writable" in err and "--workdir" in err
    assert main_entry(config, "/proc/jaxvae_run") == 1
    assert "is not writable" in capsys.readouterr().err


def test_full_disk_at_start_is_reported_before_training(tmp_path, capsys, monkeypatch):
    from jaxvae.experiment.runner import main_entry

    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(".write_test"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main_entry(small_config(), tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "is not writable (No space left on device)" in err


# -- bad data -------------------------------------------------------------------------------------------
def _mnist_config(tmp_path, manual: Path):
    return small_config("iwae_mnist", **{"data.manual_dir": str(manual), "data.download": False,
                                         "data.data_dir": str(tmp_path / "tfds")})


def _write_npz(folder: Path, **arrays) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "binarized_mnist.npz", **arrays)
    return folder


@pytest.mark.parametrize("problem, message", [
    ("corrupt", "truncated or corrupt .npz file"),
    ("size", "wrong shape (30, 100)"),
    ("grey", "values must be 0 or 1"),
])
def test_bad_dataset_files_give_a_clear_error(tmp_path, capsys, problem, message):
    from jaxvae.experiment.runner import main_entry

    rng = np.random.default_rng(0)
    good = {s: (rng.random((30, 784)) < 0.3).astype(np.uint8) for s in ("train", "valid", "test")}
    manual = tmp_path / "manual"
    if problem == "corrupt":
        _write_npz(manual, **good)
        path = manual / "binarized_mnist.npz"
        path.write_bytes(path.read_bytes()[:300])
    elif problem == "size":
        _write_npz(manual, **{**good, "train": (rng.random((30, 100)) < 0.3).astype(np.uint8)})
    else:
        _write_npz(manual, **{**good, "test": rng.integers(0, 256, (30, 784)).astype(np.uint8)})
    assert main_entry(_mnist_config(tmp_path, manual), tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err, err
    assert status(tmp_path / "run")["status"] == "failed"


def _dataset(train, valid=None, test=None, shape=(2, 2, 1)):
    from jaxvae.data import Dataset

    valid = train if valid is None else valid
    test = train if test is None else test
    is_binary = all(np.all((x == 0) | (x == 1)) for x in (train, valid, test))
    return Dataset(train, valid, test, image_shape=shape, name="t", is_binary=bool(is_binary))


def test_check_data_against_the_likelihood():
    from jaxvae.data import DataError

    bern = validation.override(base_config(), {"data.binarize": "none"})
    binary = np.array([[0, 1, 1, 0]] * 4, np.float32)
    grey = np.array([[0.2, 1, 0.5, 0]] * 4, np.float32)
    assert validation.check_data(bern, _dataset(binary)) == []
    warnings = validation.check_data(bern, _dataset(grey))
    assert len(warnings) == 1 and "data.binarize='dynamic'" in warnings[0]
    dynamic = validation.override(bern, {"data.binarize": "dynamic"})
    assert validation.check_data(dynamic, _dataset(grey)) == []
    with pytest.raises(DataError, match=r"values in \[-1, 2\] .* needs values in \[0, 1\]"):
        validation.check_data(bern, _dataset(grey, test=np.array([[-1, 2, 0, 0]], np.float32)))
    gauss = validation.override(bern, {"model.likelihood": "gaussian"})
    assert validation.check_data(gauss, _dataset(grey * 5 - 1)) == []
    with pytest.raises(DataError, match=r"shape \(4, 3\); expected \(N, 4\)"):
        validation.check_data(bern, _dataset(binary, valid=binary[:, :3]))
    with pytest.raises(DataError, match="NaN or infinite"):
        validation.check_data(gauss, _dataset(np.where(grey > 0.4, np.nan, grey)))
    with pytest.raises(DataError, match="no validation examples"):
        validation.check_data(bern, _dataset(binary, valid=binary[:0]))


# -- preemption, kill -9 and a corrupt newest checkpoint, resumed to the same final state ----------------
# Seconds by which the interrupted runs below delay each checkpoint commit (the slow-save test hook). Once
# compiled, 27 steps of training take ~0.1 s, so the slowed commits are what gives the test time to react
# to what it observes (it polls every 0.02 s) before the run moves past the point it means to interrupt;
# each step below has at least this long, enough even on a loaded machine.
SLOW_SAVE_S = 2.0


def test_kill_9_sigint_and_corrupt_checkpoint_then_resume_equals_uninterrupted(run_env, resume_reference,
                                                                              tmp_path):
    ref = resume_reference
    work = tmp_path / "interrupted"

    # 1. kill -9 in the middle of writing the first checkpoint (step 27): its temporary folder is there and
    # the commit (the rename to 27) waits SLOW_SAVE_S seconds.
    proc, out, _ = start_main(run_env, work, *RESUME, slow_save=SLOW_SAVE_S)
    wait_for(lambda: tmp_dirs(work), proc, "the first checkpoint write")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert step_dirs(work) == [] and tmp_dirs(work)  # only a temporary folder: never a broken step

    # 2. Starts over (nothing completed), then kill -9 in training after step 27's checkpoint. The next
    # checkpoint (54) comes after the validation at 54 and a slowed commit, so the kill lands before it.
    proc, out, _ = start_main(run_env, work, *RESUME, slow_save=SLOW_SAVE_S)
    wait_for(lambda: status(work).get("step", 0) >= 31 and 27 in step_dirs(work), proc, "training past step 27")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert "resuming" not in out.read_text()
    # Step 3 needs checkpoints still to come: resumed from 54, the run would reach its end (81) within
    # ~0.1 s, too soon to interrupt it reliably.
    assert step_dirs(work) == [27], f"the kill came too late: {status(work)}, steps {step_dirs(work)}"
    load_checkpoint(work, 27)  # the finished step restores

    # 3. Resumes from the last completed checkpoint (lost: only the work since), then SIGINT -> exit 3. The
    # new run writes status.json (step 0) before it resumes, so step > 27 is its own training. The SIGINT
    # lands in training or validation before 54 or during 54's slowed commits, long before the end (81).
    proc, out, err = start_main(run_env, work, *RESUME, slow_save=SLOW_SAVE_S)
    wait_for(lambda: "resuming from checkpoint at step 27" in out.read_text() and status(work).get("step", 0) > 27,
             proc, "resumed training")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 3, err.read_text()
    assert "Traceback" not in err.read_text() and "preempted" in err.read_text()
    st = status(work)
    assert st["status"] == "preempted" and step_dirs(work)[-1] == st["step"] < 81
    assert step_dirs(work)[0] == 27

    # 4. The newest checkpoint gets corrupted: the next launch warns, uses the one before, finishes.
    newest, previous = step_dirs(work)[-1], step_dirs(work)[-2]
    _corrupt(work / "checkpoints" / "latest" / str(newest), "truncate")
    p = run_main(run_env, work, *RESUME)
    check_ok(p)
    assert f"checkpoint step {newest}" in p.stderr and "does not restore" in p.stderr
    assert f"resuming from checkpoint at step {previous}" in p.stdout
    assert (work / "checkpoints" / "corrupt").is_dir()

    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, work))
    assert a["config"] == b["config"] and a["test"] == b["test"] and a["train"]["steps"] == b["train"]["steps"] == 81
    assert_trees_equal(load_checkpoint(ref, 81), load_checkpoint(work, 81))


def _worker_thread_ids(pid: int) -> list[int]:
    return sorted(int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid)


@pytest.mark.parametrize("to", ["process", "worker thread"])
def test_sigterm_while_loading_data_exits_3_as_preempted(run_env, tmp_path, to):
    """SIGTERM before the training loop (here: during a slowed-down data load of 300 s) is a preemption too:
    exit code 3 at once, status "preempted", one line on stderr, no traceback. "worker thread": the signal
    is sent to the id of one of the process's other threads (XLA's), as the kernel may deliver a
    process-directed signal to any thread that does not block it; the entry point blocks it in every thread
    but the main one, else the handler ran only when the load's sleep ended (the cold-run record's
    timeout)."""
    wd = tmp_path / "run"
    proc, out, err = start_main({**run_env, building.SLOW_LOAD_ENV: "300"}, wd, *SMALL)
    wait_for(lambda: status(wd).get("message") == "loading data", proc, "data loading")
    target = _worker_thread_ids(proc.pid)[-1] if to == "worker thread" else proc.pid
    proc.send_signal(signal.SIGTERM) if target == proc.pid else os.kill(target, signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == EXIT_PREEMPTED
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit within 30 s of SIGTERM to the {to} (the data load sleeps 300 s)")
    assert status(wd)["status"] == "preempted"
    text = err.read_text()
    assert "preempted: interrupted outside a training dispatch" in text and "Traceback" not in text


def _start_group(env, root: Path, *extra) -> tuple[subprocess.Popen, Path]:
    log = root.parent / f"{root.name}.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "jaxvae.experiment.vectorized", f"--config={QUICKSTART}",
                                 f"--workdir={root / 'm0'}", f"--workdir={root / 'm1'}",
                                 '--overrides=[{"seed": 0}, {"seed": 1}]', *SMALL, *extra],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _blocked(pid: int) -> bool:
    """Whether the process's main thread blocks SIGTERM and SIGINT."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigBlk:"))
    except (OSError, StopIteration):
        return False
    want = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    return int(line.split()[1], 16) & want == want


@pytest.mark.parametrize("when", ["importing", "loading data"])
def test_sigterm_while_a_vectorized_group_starts_exits_3_with_every_member_preempted(run_env, tmp_path, when):
    """SIGTERM to ``python -m jaxvae.experiment.vectorized`` during start-up: while it imports (the signal
    waits, blocked, until the run's handler is installed; no status.json was written yet) or during the
    slowed data load: exit 3 within seconds, every member's status.json "preempted", one line, no
    traceback."""
    root = tmp_path / "group"
    proc, log = _start_group({**run_env, building.SLOW_LOAD_ENV: "300"}, root)
    if when == "importing":  # once the entry point's first line blocked the signals (SigBlk of /proc)
        wait_for(lambda: _blocked(proc.pid), proc, "the signals blocked", timeout=60)
    else:
        wait_for(lambda: "loading data" in status(root / "m1").get("message", ""), proc, "data loading")
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit within 60 s of SIGTERM while {when}")
    text = log.read_text()
    assert rc == EXIT_PREEMPTED, text[-3000:]
    assert [status(root / m).get("status") for m in ("m0", "m1")] == ["preempted", "preempted"], text[-3000:]
    assert "preempted: interrupted outside a training dispatch" in text and "Traceback" not in text


_TEARDOWN = """
import os, signal, sys, threading, time
signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))  # as the entry points
from jaxvae.experiment import preemption
with preemption.sigterm_interrupts():
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    worker = threading.Thread(target=time.sleep, args=(2.0,))  # as orbax's: inherits the unblocked mask
    worker.start()
assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
os.kill(os.getpid(), signal.SIGTERM)  # during the exit, after the run's outcome is known
signal.pthread_kill(worker.ident, signal.SIGTERM)  # ... and taken by that thread
time.sleep(0.3)
print("outcome kept")
sys.exit(0)
"""


def test_signal_after_the_run_keeps_its_exit_code(run_env):
    """The fault campaign's finished runs that exited -15: a SIGTERM after ``sigterm_interrupts`` (the
    interpreter's exit) met the restored default action, in the main thread or in a thread started inside
    the block (its mask unblocked). An entry point's signals are ignored once the outcome is known, so the
    exit code stays the outcome's."""
    p = subprocess.run([sys.executable, "-c", _TEARDOWN], cwd=ROOT, env=run_env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "outcome kept" in p.stdout, (p.returncode, p.stderr[-2000:])


_DURING_IMPORT = """
import os, signal, sys, threading, time
signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))  # as the entry points
sys.path.insert(0, sys.argv[1])
from jaxvae.experiment import preemption
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
try:
    with preemption.sigterm_interrupts():
        import slow_module  # its top-level code sleeps 1 s: the signal lands inside the import
        time.sleep(30)  # outside imports a blocking wait is interrupted at once
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted after the import:", sys.modules["slow_module"].DONE)
"""


def test_signal_inside_an_import_is_handled_after_it(run_env, tmp_path):
    """A KeyboardInterrupt raised inside an import can cross a C++ extension's boundary (torch's pybind11
    module init, imported by tensorboardX: std::terminate, exit -6, found by the fault campaign). The
    handler defers it until the import is over; a blocking wait after it is still interrupted."""
    (tmp_path / "slow_module.py").write_text("import time\ntime.sleep(1.0)\nDONE = True\n")
    t = __import__("time").time()
    p = subprocess.run([sys.executable, "-c", _DURING_IMPORT, str(tmp_path)], cwd=ROOT, env=run_env,
                       capture_output=True, text=True, timeout=300)
    assert "interrupted after the import: True" in p.stdout, (p.stdout, p.stderr[-2000:])
    assert __import__("time").time() - t < 25  # the 30 s sleep was interrupted


@pytest.mark.parametrize("bad", [1, 2.5, [1, "json"]])
def test_imports_of_the_wrong_type_is_a_config_error(bad):
    """Found by the override fuzzer: ``imports=1`` raised a TypeError from deep inside validation."""
    with pytest.raises(validation.ConfigError, match="imports: expected a module name"):
        validation.validate_config(validation.override(_experiment("beta_vae"), {"imports": bad}))
