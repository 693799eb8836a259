"""``train_and_evaluate(config, workdir)``: one experiment from data to results.json.

Train (fused ``lax.scan`` dispatches over the on-device training set), checkpoint (orbax; resume from
the latest), validate (best checkpoint by the validation IWAE bound), evaluate every test example,
write metrics, pictures and ``results.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvae import data as data_lib
from jaxvae.experiment import init_from, locks, parallel
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.checkpoints import CheckpointError, Checkpoints
from jaxvae.experiment.eval_driver import evaluate_sandwich, evaluate_split, weight_health_lines
from jaxvae.experiment.imaging import bits_per_dim_results
from jaxvae.experiment.factor_eval import factor_metrics, rate_distortion, sample_quality
from jaxvae.vae.evaluation import linear_gaussian_log_px
from jaxvae.experiment.metrics import MetricWriter
from jaxvae.experiment.protocol import EXIT_PREEMPTED
from jaxvae.vae.model import VAE


class RunError(RuntimeError):
    """A run stopped for a reason the user can act on; the message says what happened and what to do."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved and the run can be resumed."""


# -- building blocks --------------------------------------------------------------------------------
SLOW_LOAD_ENV = "JAXVAE_TEST_SLOW_LOAD_S"  # test hook: delay data loading (never set it in real runs)


PROGRESS_KEEP = 8  # progress.json keeps the entries of this many earlier checkpoints ("earlier")


def load_progress(workdir: Path, restored_step: int | None) -> dict:
    """Wall time and examples/s accumulate over resumed segments: progress.json is written with each
    checkpoint (``write_progress``) and read back only for the checkpoint being resumed (its own entry, or
    one of the "earlier" ones kept beside it)."""
    progress = {"step": 0, "wall_time_s": 0.0, "train_seconds": 0.0, "trained_examples": 0, "valid": None}
    path = Path(workdir) / "progress.json"
    if restored_step is not None and path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = {}
        earlier = saved.pop("earlier", None) or {}
        if saved.get("step") == restored_step:
            progress.update(saved)
        elif isinstance(earlier, dict) and isinstance(earlier.get(str(restored_step)), dict):
            progress.update(earlier[str(restored_step)])
    return progress


def write_progress(workdir: Path, step: int, prior: dict, wall_s: float, train_seconds: float,
                   trained_examples: int, valid: dict | None = None) -> None:
    """progress.json for the checkpoint of ``step``: ``prior`` (load_progress) plus this segment's time and
    examples, and the latest validation bounds ``{"iwae": {K: bound}}`` (kept for results.json when a
    finished run is evaluated again). Written *before* the checkpoint (``save_checkpoint``), with the
    entries of the previous checkpoints kept under "earlier": whichever checkpoint a relaunch restores
    after a kill -9, its entry is there (written after the checkpoint, a kill between the two lost the
    final validation from results.json: fault campaign, 2026-11-30)."""
    path = Path(workdir) / "progress.json"
    earlier = {}
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
        earlier = dict(old.pop("earlier", None) or {})
        if old.get("step") is not None and old["step"] != step:
            earlier[str(old["step"])] = old
    except (OSError, ValueError, TypeError, AttributeError):
        earlier = {}
    earlier.pop(str(step), None)
    earlier = {k: earlier[k] for k in sorted(earlier, key=lambda k: int(k))[-PROGRESS_KEEP:]}
    write_json(path, {
        "step": step, "wall_time_s": prior["wall_time_s"] + wall_s,
        "train_seconds": prior["train_seconds"] + train_seconds,
        "trained_examples": prior["trained_examples"] + trained_examples,
        "valid": {"iwae": valid["iwae"]} if valid else prior.get("valid"),
        "earlier": earlier})


def due_for_validation(config, step: int, steps_per_epoch: int, total_steps: int) -> bool:
    """Validate after ``step``: every train.eval_every_epochs epochs, and at the final step (also when the
    run ends mid-epoch, e.g. a fractional train.budget)."""
    return bool(config.train.eval_every_epochs and (step == total_steps or (
        step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.train.eval_every_epochs == 0)))


def due_for_checkpoint(config, step: int, steps_per_epoch: int, total_steps: int) -> bool:
    """Checkpoint after ``step`` (besides validations): every train.checkpoint_every_epochs epochs, and
    at the final step."""
    every = config.train.checkpoint_every_epochs
    return step == total_steps or bool(
        every and step % steps_per_epoch == 0 and (step // steps_per_epoch) % every == 0)


# -- the loop's shared parts (runner.train_and_evaluate and vectorized.train_group call these, so that
# solo runs and group members cannot drift apart) ----------------------------------------------------
def due_after(config, step: int, steps_per_epoch: int, total_steps: int) -> tuple[bool, bool]:
    """(validate, checkpoint) after ``step``: a validation is always followed by a checkpoint."""
    validate = due_for_validation(config, step, steps_per_epoch, total_steps)
    return validate, validate or due_for_checkpoint(config, step, steps_per_epoch, total_steps)


def nan_stop_message(term: str, bad_step: int, last_good: int | None, workdir: Path) -> str:
    """The train.nan_policy=stop error: where it happened, what is kept, what to change."""
    where = (f"the last good checkpoint is step {last_good} in {Path(workdir) / 'checkpoints'}"
             if last_good is not None else "no checkpoint was written yet")
    return (f"non-finite {term} at step {bad_step}; stopped without applying it ({where}). "
            "Lower train.learning_rate, set train.grad_clip_norm, or set train.nan_policy=skip to skip such "
            "updates")


def save_checkpoint(ckpts: Checkpoints, workdir: Path, step: int, state, valid_bound, progress: dict,
                    wall_s: float, train_seconds: float, trained_examples: int, valid_result) -> int:
    """progress.json (``write_progress``), then the checkpoint of ``state`` at ``step`` (also as the best
    when ``valid_bound`` is given); returns ``step`` (the new last good checkpoint)."""
    write_progress(workdir, step, progress, wall_s, train_seconds, trained_examples, valid_result)
    ckpts.save(step, state._asdict(), valid_bound)
    return step


def preemption_save_due(step: int, last_good: int | None, total_steps: int) -> bool:
    """Whether a preempted loop must checkpoint ``step`` before it exits (not already saved, not the end)."""
    return step < total_steps and step != last_good


def stop_agreed(local: bool) -> bool:
    """Whether any process of the run was asked to stop (checked at each dispatch boundary): a preemption
    signal may reach one host of a multi-host run only, and then every host must checkpoint the same step
    and exit 3. One tiny all-gather per dispatch, only when there are several processes."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray([int(local)], np.int32))))


def nothing_trained(last_good: int | None) -> str:
    """What a run stopped before its first dispatch saved: nothing new."""
    return ("nothing new (stopped before training; the last checkpoint is step "
            f"{last_good})" if last_good is not None else "nothing (stopped before the first training step)")


def stop_reason(signum) -> str:
    return f"signal {signum}" if signum is not None else "a preemption signal on another process of this run"


def preemption(why: str, saved: str) -> Preempted:
    """The error that ends a preempted loop (exit 3), after ``saved`` was checkpointed."""
    return Preempted(f"{why} received: saved {saved}; run the same command again to resume")


def next_log_step(step: int, every: int) -> int:
    return (step // every + 1) * every


def log_train(writer: MetricWriter, log, step: int, total_steps: int, steps_per_epoch: int, batch_size: int,
              metrics: dict, trained_examples: int, train_seconds: float, label: str = "",
              rate_unit: str = "ex/s") -> None:
    """The train metrics line (metrics.jsonl) and the log line, with examples/s and the ETA."""
    epoch = step / steps_per_epoch
    rate = trained_examples / max(train_seconds, 1e-9)
    eta = (total_steps - step) * batch_size / max(rate, 1e-9)
    writer.write(step, "train", epoch=epoch, examples_per_s=rate, **metrics)
    shown = " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "beta")
    log(f"{label}step {step}/{total_steps} epoch {epoch:.1f} {shown} | {rate:,.0f} {rate_unit} | "
        f"ETA {_fmt_eta(eta)}")


def train_results(model, config, state, steps_per_epoch: int, progress: dict, wall_s: float,
                  trained_examples: int, train_seconds: float, **extra) -> dict:
    """results.json's "train": this segment's time and examples plus those of earlier ones (``progress``)."""
    seconds = progress["train_seconds"] + train_seconds
    return {
        "steps": int(state.step), "epochs": int(state.step) / steps_per_epoch,
        "wall_time_s": progress["wall_time_s"] + wall_s,
        "examples_per_s": (progress["trained_examples"] + trained_examples) / seconds if seconds else None,
        "skipped_updates": int(state.skipped),
        "flops_per_example": train_lib.flops_per_example(model, config.objective.k * config.objective.m),
        **extra,
    }


def assemble_results(results: dict, valid_result: dict | None, train: dict) -> dict:
    """results.json from the test evaluation (``final_results``), the last validation and ``train_results``."""
    results["valid"] = ({"iwae": valid_result["iwae"]} if valid_result else None)
    results["train"] = train
    return results


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    d = config.data
    if os.environ.get(SLOW_LOAD_ENV):
        time.sleep(float(os.environ[SLOW_LOAD_ENV]))
    return data_lib.load_dataset(
        d.name, data_dir=d.data_dir or None, manual_dir=d.manual_dir or None, download=d.download,
        valid_size=d.valid_size or None, image_key=d.image_key, binarize=d.binarize, seed=config.seed)


def build_model(config: ml_collections.ConfigDict, x_dim: int, image_shape=None) -> VAE:
    """The VAE of ``config.model``; ``image_shape`` (H, W, C) gives it image-shaped inputs when a conv
    network or a channel-coupled likelihood needs them (jaxvae.vae.conv.image_fields)."""
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
        compute_dtype=m.compute_dtype, **image_fields(m, image_shape), **flow_prior_options(m))


def flow_prior_options(m: ml_collections.ConfigDict) -> dict:
    """The VAE fields of the IAF / Sylvester flows and the VampPrior / mixture priors (model.* options)."""
    return dict(flow_init_scale=float(m.flow_init_scale), flow_head_scale=float(m.flow_head_scale),
                flow_hidden=tuple(m.flow_hidden),
                flow_context=int(m.flow_context), sylvester_variant=m.sylvester_variant,
                sylvester_columns=int(m.sylvester_columns), sylvester_reflections=int(m.sylvester_reflections),
                prior_components=int(m.prior_components), prior_init=m.prior_init)


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


def _config_fingerprint(config: ml_collections.ConfigDict) -> dict:
    """The parts of the config a resumed run must share with the run it resumes."""
    c = config.to_dict()
    return {k: c[k] for k in ("seed", "imports", "data", "model", "objective", "train")}


def _with_defaults(saved: dict) -> dict:
    """A saved fingerprint with fields added since it was written filled in with their defaults, so
    that a run written by an older jaxvae still resumes."""
    from jaxvae.experiment.configs import base_config

    def merge(default, given):
        if isinstance(default, dict) and isinstance(given, dict):
            return {k: merge(default.get(k), given[k]) if k in default else given[k] for k in given} | {
                k: v for k, v in default.items() if k not in given}
        return given

    return merge(json.loads(json.dumps(_config_fingerprint(base_config()))), saved)


# The last SIGTERM/SIGINT this process received while a run was going on ("signal": its number, or None).
# Inside the training loop (``_preemption_flag``) and, in a multi-process run, everywhere else too
# (``sigterm_interrupts``), a signal only records itself here; the run acts on it at the agreement points
# (``stop_agreed``) that every process passes: before each dispatch, and before and after the final
# evaluation. "armed": inside ``sigterm_interrupts`` (a signal received before the run started counts).
_received = {"signal": None, "armed": False}


@contextlib.contextmanager
def _preemption_flag():
    """Turns SIGTERM/SIGINT into a flag (``_received``) that the loop checks at each dispatch boundary."""

    def handler(signum, frame):
        _received["signal"] = signum

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield _received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def forget_earlier_signal() -> None:
    """At the start of a run called as a library (not inside ``sigterm_interrupts``): a signal that an
    earlier run in this process received is not this run's."""
    if not _received["armed"]:
        _received["signal"] = None


def stop_requested() -> bool:
    """Whether this process received SIGTERM/SIGINT during the run (see ``_received``)."""
    return _received["signal"] is not None


def write_json(path: Path, obj) -> None:
    """Atomic write: a crash never leaves a half-written JSON file. Only process 0 writes."""
    if jax.process_index() != 0:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def _status(workdir: Path, status: str, step: int, message: str = "") -> None:
    write_json(workdir / "status.json", {"status": status, "step": int(step), "message": message})


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def prepare_workdir(config: ml_collections.ConfigDict, workdir: Path, allow_config_change: bool) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"workdir {workdir} is not writable ({e.strerror}); choose another --workdir") from None
    saved = workdir / "config.json"
    fingerprint = _config_fingerprint(config)
    if saved.exists() and not allow_config_change:
        old = _with_defaults(json.loads(saved.read_text()))
        if old != json.loads(json.dumps(fingerprint)):
            diff = sorted(_diff_keys(old, json.loads(json.dumps(fingerprint))))
            raise RunError(
                f"workdir {workdir} holds a run with a different config (differs in: {', '.join(diff)}); "
                "use a new --workdir, or pass --allow_config_change to resume it with the new config")
    write_json(saved, fingerprint)


@contextlib.contextmanager
def workdir_locks(workdirs):
    """Holds the exclusive lock of every workdir (``locks``: one writer per workdir) for the block, taken
    before any file in them is written. Raises ``locks.WorkdirBusy`` (nothing written) when another process
    holds one, RunError when a workdir cannot be created."""
    try:
        with locks.holding(workdirs, jax.process_index()):
            yield
    except locks.LockUnavailable as e:
        raise RunError(f"workdir {workdirs[0] if len(workdirs) == 1 else 'in ' + ', '.join(map(str, workdirs))} "
                       f"is not writable ({e.strerror}); choose another --workdir") from None


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


# -- the run ------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *,
                       allow_config_change: bool = False, log=print) -> dict:
    """Train, checkpoint, evaluate; returns the results dict also written to <workdir>/results.json.
    Holds the workdir's lock throughout (``locks.WorkdirBusy`` when another process has it)."""
    workdir = Path(workdir)
    forget_earlier_signal()
    with workdir_locks([workdir]):
        return _train_and_evaluate(config, workdir, allow_config_change, log)


def _train_and_evaluate(config, workdir: Path, allow_config_change: bool, log) -> dict:
    prepare_workdir(config, workdir, allow_config_change)
    _status(workdir, "running", 0, "loading data")
    dataset = load_data(config)
    from jaxvae.experiment.validation import check_data

    for warning in check_data(config, dataset):  # DataError for data the model cannot use
        log(f"warning: {warning}")
    model = build_model(config, dataset.train.shape[1], dataset.image_shape)
    batch_size = config.train.batch_size
    steps_per_epoch = train_lib.steps_per_epoch_for(len(dataset.train), batch_size)
    schedule, total_steps = train_lib.learning_rate_schedule(config, steps_per_epoch)
    tx = train_lib.make_optimizer(config, schedule)
    state = train_lib.create_train_state(model, tx, config.seed,
                                         output_bias(config, model, dataset.train), init_data=dataset.train)
    state = init_from.apply(config, state, tx, log)  # train.init_from (a resumed checkpoint wins below)
    mesh = parallel.make_mesh(config.parallel.num_devices)
    parallel.check_divisible(batch_size, mesh, "train.batch_size")
    ckpts = Checkpoints(workdir, config.train.keep_checkpoints)
    restored, restored_step = ckpts.restore_latest(state._asdict())
    if restored is not None:
        state = train_lib.TrainState(**restored)
        log(f"resuming from checkpoint at step {restored_step}")
    start_step = int(state.step)
    writer = MetricWriter(workdir, resume_step=start_step, enabled=jax.process_index() == 0, config=config)
    run_steps = train_lib.make_run_steps(model, config, tx, steps_per_epoch, batch_size, mesh)
    state = parallel.replicate(state, mesh)
    x_train = parallel.replicate(dataset.train, mesh)
    last_good = restored_step

    progress = load_progress(workdir, restored_step)

    def save(step, valid_bound=None):
        nonlocal last_good
        last_good = save_checkpoint(ckpts, workdir, step, state, valid_bound, progress, time.time() - t_start,
                                    train_seconds, trained_examples, valid_result)

    log(f"{config.name}: {model.flow_name} posterior, "
        f"objective={config.objective.name} k={config.objective.k}, {len(dataset.train)} training "
        f"examples, {total_steps} steps ({total_steps / steps_per_epoch:.1f} epochs) of batch {batch_size}")
    t_start = time.time()
    trained_examples = 0
    train_seconds = 0.0
    next_log = next_log_step(start_step, config.train.log_every_steps)
    valid_result = progress["valid"]  # the last validation of earlier segments
    try:
        with _preemption_flag() as flag:
            step = start_step
            while True:
                # agreement point: before every dispatch (the first one included, so a signal received
                # while the data loaded or the state restored on any process stops every process here)
                if step < total_steps and stop_agreed(flag["signal"] is not None):
                    saved = f"a checkpoint at step {step}"
                    if step > start_step and preemption_save_due(step, last_good, total_steps):
                        save(step)
                    elif step == start_step:
                        saved = nothing_trained(last_good)
                    raise preemption(stop_reason(flag["signal"]), saved)
                if step >= total_steps:
                    break
                n = train_lib.dispatch_sizes(step, total_steps, steps_per_epoch,
                                             train_lib.dispatch_steps(config, model))
                t0 = time.time()
                state, info = run_steps(state, x_train, n)
                metrics = {k: float(v) for k, v in jax.device_get(info.metrics).items()}
                bad_step = int(info.bad_step)
                dt = time.time() - t0
                if bad_step >= 0 and config.train.nan_policy == "stop":
                    raise RunError(nan_stop_message(train_lib.BAD_TERMS[int(info.bad_term)], bad_step,
                                                    last_good, workdir))
                step = int(state.step)
                trained_examples += n * batch_size
                train_seconds += dt
                epoch = step / steps_per_epoch
                if step >= next_log or step == total_steps:
                    log_train(writer, log, step, total_steps, steps_per_epoch, batch_size, metrics,
                              trained_examples, train_seconds)
                    next_log = next_log_step(step, config.train.log_every_steps)
                valid_bound = None
                need_valid, need_save = due_after(config, step, steps_per_epoch, total_steps)
                if need_valid:
                    valid_result = _validate(config, model, state, dataset, mesh)
                    valid_bound = valid_result["iwae"][str(config.eval.valid_k)]
                    writer.write(step, "valid", **{f"iwae_{config.eval.valid_k}": valid_bound})
                if need_save:
                    save(step, valid_bound)
                _status(workdir, "running", step, f"epoch {epoch:.1f}")
        # agreement point: before the final evaluation (the last step's checkpoint is saved)
        if stop_agreed(stop_requested()):
            raise preemption(stop_reason(_received["signal"]), f"the final checkpoint at step {step} "
                             "(the test evaluation was not started)")
        train = train_results(model, config, state, steps_per_epoch, progress, time.time() - t_start,
                              trained_examples, train_seconds)
        _status(workdir, "running", int(state.step), "evaluating on the test set")
        results = assemble_results(_final_evaluation(config, model, state, dataset, workdir, mesh),
                                   valid_result, train)
        # agreement point: after the final evaluation (a signal received during it, on any process, stops
        # every process before results.json is written; the relaunch evaluates the final checkpoint again)
        if stop_agreed(stop_requested()):
            raise preemption(stop_reason(_received["signal"]), f"the final checkpoint at step "
                             f"{int(state.step)} (results.json not written)")
    except Preempted as e:
        _end_run(workdir, "preempted", int(state.step), str(e), writer, ckpts)
        raise
    except Exception as e:  # a failing final evaluation too: status.json must not stay "running"
        _end_run(workdir, "failed", int(state.step), f"{type(e).__name__}: {e}", writer, ckpts)
        raise
    write_json(workdir / "results.json", results)
    writer.log_results(results)  # MLflow / W&B: final metrics, results.json and pictures
    _end_run(workdir, "finished", int(state.step), "results.json written", writer, ckpts)
    log(format_results(results))
    return results


def _end_run(workdir: Path, status: str, step: int, message: str, writer, ckpts) -> None:
    """Closes a run's metric writer and checkpoint manager and records its outcome in status.json.
    "finished" is written after both are flushed, so it promises that everything is on disk; any other
    outcome before, so that a slow or interrupted flush cannot leave the run looking "running"."""
    if status != "finished":
        _status(workdir, status, step, message)
    writer.close()
    ckpts.close()
    if status == "finished":
        _status(workdir, status, step, message)


def _subset(x, labels, size: int):
    """A fixed random subset of ``size`` examples (all when size is 0): splits are often ordered (the
    binarized MNIST test set's first 1000 images have mean pixel 0.170 against 0.133 overall), so a
    prefix would be biased."""
    if not size or size >= len(x):
        return x, labels
    keep = np.sort(np.random.default_rng(0).choice(len(x), size, replace=False))
    return x[keep], (labels[keep] if labels is not None else None)


def valid_eval_spec(config, dataset) -> tuple[np.ndarray, jax.Array, dict]:
    """The validation evaluation of a run: (examples, PRNG key, evaluate_split's keyword arguments)."""
    x, _ = _subset(dataset.valid, None, config.eval.valid_examples)
    return x, jax.random.key(config.seed + 1), dict(
        ks=(config.eval.valid_k,), batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size,
        binarize=config.data.binarize, seed=config.seed + 1, surgery=False)


def final_eval_spec(config, dataset) -> tuple[np.ndarray, np.ndarray | None, jax.Array, dict]:
    """The test evaluation of a run: (examples, their labels, PRNG key, evaluate_split's keyword arguments)."""
    x, labels = _subset(dataset.test, dataset.test_labels, config.eval.max_examples)
    return x, labels, jax.random.key(config.seed + 2), dict(
        ks=tuple(config.eval.ks), batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size,
        surgery_samples=config.eval.surgery_samples, binarize=config.data.binarize,
        seed=eval_binarize_seed(config))


def eval_binarize_seed(config) -> int:
    """Seed of the fixed binarization of the test set (data.binarize=dynamic): eval.binarize_seed when
    >= 0 (one draw for every run, as the IWAE paper's fixed test set), else the run's seed + 2."""
    fixed = int(config.eval.get("binarize_seed", -1))
    return fixed if fixed >= 0 else config.seed + 2


def train_set_results(config, model, params, dataset) -> dict | None:
    """Bounds on a fixed subset of ``eval.train_examples`` training examples (binarized once, like the test
    set, with the test seed + 1), for the train/test gap; None when eval.train_examples is 0."""
    size = int(config.eval.get("train_examples", 0))
    if not size:
        return None
    x, _ = _subset(dataset.train, None, size)
    seed = eval_binarize_seed(config) + 1
    res = evaluate_split(model, params, x, jax.random.key(config.seed + 5), ks=tuple(config.eval.ks),
                         batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size,
                         binarize=config.data.binarize, seed=seed, surgery=False)
    res.pop("seconds", None)
    return res


def _validate(config, model, state, dataset, mesh) -> dict:
    x, key, kw = valid_eval_spec(config, dataset)
    return evaluate_split(model, state.params, x, key, mesh=mesh, **kw)


def _final_evaluation(config, model, state, dataset, workdir: Path, mesh) -> dict:
    x, _, key, kw = final_eval_spec(config, dataset)
    test = evaluate_split(model, state.params, x, key, mesh=mesh, **kw)
    return final_results(config, model, state.params, dataset, workdir, test)


def final_results(config, model, params, dataset, workdir: Path, test: dict) -> dict:
    """results.json (less "valid" and "train") from the test evaluation ``test`` (evaluate_split's dict):
    adds the exact log p(x) of a linear-Gaussian model and writes the pictures."""
    x, labels, _, _ = final_eval_spec(config, dataset)
    test = dict(test)
    test["exact_log_px"] = None
    if is_linear_gaussian(model):
        test["exact_log_px"] = float(jnp.mean(linear_gaussian_log_px(model, params, jnp.asarray(x))))
    test.update(evaluate_sandwich(model, params, x, jax.random.key(config.seed + 6), config.eval,
                                  binarize=config.data.binarize, seed=config.seed + 2))  # eval.ais/bdmc/gaps
    eval_seconds = test.pop("seconds")
    test.update(rate_distortion(test))
    factors = _subset(dataset.test, getattr(dataset, "test_factors", None), config.eval.max_examples)[1]
    test.update(factor_metrics(model, params, x, factors, getattr(dataset, "factor_names", None)))
    test.update(sample_quality(model, params, jax.random.key(config.seed + 4), config.data.name))
    pictures = []
    if config.eval.images and jax.process_index() == 0:
        from jaxvae.experiment.pictures import write_pictures
        pictures = write_pictures(model, params, str(workdir), jax.random.key(config.seed + 3),
                                  x_test=np.asarray(x), image_shape=dataset.image_shape, labels=labels)
    return {
        "name": config.name,
        "workdir": str(workdir),
        "status": "finished",
        "config": config.to_dict(),
        "summary": {
            "dataset": config.data.name, "objective": config.objective.name, "k": config.objective.k,
            "flow": config.model.flow, "flow_length": config.model.flow_length,
            "beta": config.objective.beta, "seed": config.seed, "latent_dim": config.model.latent_dim,
        },
        "test": {**test, **bits_per_dim_results(config, model, dataset, test)},
        "train_set": train_set_results(config, model, params, dataset),
        "eval_wall_time_s": eval_seconds,
        "pictures": [os.path.basename(p) for p in pictures],
        "curves": "metrics.jsonl",
        "devices": [str(d) for d in jax.devices()],
    }


def format_results(r: dict) -> str:
    """The final table: one line per bound, tightest last."""
    t = r["test"]
    rows = [("test ELBO", t["elbo"])]
    rows += [(f"test IWAE_{k}", v) for k, v in t["iwae"].items()]
    if t.get("exact_log_px") is not None:
        rows.append(("exact log p(x)", t["exact_log_px"]))
    rows += [(f"NLL estimate (K={t['nll_k']})", t["nll"])]
    if str(t.get("bits_per_dim_convention", "")).startswith("8-bit"):
        rows.append(("bits/dim (NLL estimate)", t["bits_per_dim"]))
    rows += [("active units", t["active_units"])]
    if t.get("mutual_information") is not None:
        rows += [("mutual information I_q(x;z)", t["mutual_information"]),
                 ("marginal KL(q(z)||p(z))", t["marginal_kl"])]
    tr = r.get("train") or {}
    rows += [("train wall time (s)", tr.get("wall_time_s")), ("train examples/s", tr.get("examples_per_s"))]
    width = max(len(name) for name, _ in rows)
    lines = [f"results for {r['workdir']} ({t['num_examples']} test examples)"]
    for name, v in rows:
        shown = f"{v:.3f}" if isinstance(v, float) else str(v)
        lines.append(f"  {name:<{width}}  {shown:>12}")
    lines += weight_health_lines(t)
    return "\n".join(lines)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _inside_import(frame) -> bool:
    """Whether ``frame`` (a signal handler's) runs inside an import (a module's top-level code)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM and SIGINT outside the training loop (data loading, checkpoint restore, compilation, final
    evaluation): in a single-process run they raise KeyboardInterrupt, so a preempted job exits 3
    ("preempted") at once instead of dying silently; inside the loop ``_preemption_flag`` takes over
    (checkpoint, then exit 3). In a multi-process run a signal reaches one process only, and raising there
    would leave the others waiting in a collective: there the handler only records it (``_received``) and
    every process stops at the next agreement point (``stop_agreed``: before each dispatch, the first one
    included, and before and after the final evaluation), all with the same checkpoint and exit 3.
    SIGINT gets this handler too (not Python's default one): otherwise ``asyncio.run`` inside orbax's
    restore installs its own, which only cancels orbax's task, and an interrupt there was lost (the fault
    campaign found runs that finished with exit 0 after a Ctrl-C).

    The entry points (``jaxvae.main``, ``jaxvae.experiment.vectorized``) block SIGTERM/SIGINT first thing,
    before any import starts a thread, so every thread JAX/XLA starts inherits the blocked mask; here the
    handlers are installed, then the signals are unblocked in this (the main) thread only, and one that
    arrived while the process was starting is handled at that moment. Why: a process-directed signal goes
    to any thread that does not block it. Taken by an XLA worker thread, Python's handler still runs in
    the main thread, but only once the main thread's current system call returns, so a blocking wait (the
    slowed data load of the test hook: a 60 s sleep) was not interrupted and the run stopped only when it
    ended by itself: the SIGTERM-while-loading test's timeout in the cold-run record (reproduced by sending
    SIGTERM to a worker thread's id: exit after the whole sleep instead of 0.3 s)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    jax.local_devices()  # the backend (and its thread pools) exists before the signals are unblocked
    multi = jax.process_count() > 1

    def handler(signum, frame):
        _received["signal"] = signum
        if multi:
            return
        if _inside_import(frame):
            # Raising inside an import can cross a C++ extension's exception boundary: the fault campaign
            # had a SIGTERM land in torch's module initialization (imported by tensorboardX for the metric
            # writer), where pybind11 turned the KeyboardInterrupt into std::terminate (exit -6, no
            # checkpoint of the interruption). So the signal is re-sent to the main thread every 50 ms
            # until the import is over, and handled then (a blocking wait outside imports is still
            # interrupted at once).
            threading.Timer(0.05, signal.pthread_kill, (threading.main_thread().ident, signum)).start()
            return
        raise KeyboardInterrupt(f"signal {signum}")

    _received.update(signal=None, armed=True)
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # (unchanged: read only)
    try:
        # inside the try: a signal pending since start-up raises here, and the finally still restores
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        yield
    finally:
        # The entry points (which blocked the signals) are exiting once the run's outcome is known: a
        # signal during that exit (interpreter and XLA teardown, seconds under load) must not turn the
        # outcome's exit code (0 / 3 / 1) into death by SIGTERM (-15). Restoring their blocked mask is not
        # enough: threads started inside this block (orbax's, XLA's lazily created pools) inherited the
        # unblocked mask and would take the signal with the default action restored (the fault campaign's
        # finished runs that exited -15, reproduced by a SIGTERM just after "finished"). So there the
        # signals are ignored from here on; elsewhere (tests, notebooks) the old handlers come back.
        blocked = all(s in old_mask for s in STOP_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if blocked else h)
        _received["armed"] = False


def mark_interrupted(workdir: Path) -> None:
    """status.json of a run interrupted outside a dispatch: "preempted" (when it was "running", or when the
    signal came before the run wrote one)."""
    try:
        path = workdir / "status.json"
        old = json.loads(path.read_text()) if path.exists() else {"status": "running", "step": 0}
        if old.get("status") == "running" and workdir.is_dir():
            _status(workdir, "preempted", old.get("step", 0),
                    "interrupted outside a training dispatch; run the same command again to resume")
    except (OSError, ValueError):
        pass


def main_entry(config, workdir, allow_config_change=False) -> int:
    """Runs and maps outcomes to exit codes: 0 finished, 3 preempted, 1 a clear error (no traceback).
    The workdir's lock is taken first: a busy workdir is refused (exit 1) without touching any file."""
    try:
        with workdir_locks([Path(workdir)]):
            return _main_entry(config, workdir, allow_config_change)
    except (locks.WorkdirBusy, RunError) as e:  # only from taking the lock: nothing of the run's to mark
        print(f"error: {e}", file=sys.stderr)
        return 1


def _main_entry(config, workdir, allow_config_change) -> int:
    try:
        with sigterm_interrupts():
            train_and_evaluate(config, workdir, allow_config_change=allow_config_change)
        return 0
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # SIGINT/SIGTERM before training started or during the final evaluation
        mark_interrupted(Path(workdir))
        print("preempted: interrupted outside a training dispatch; run the same command again to resume",
              file=sys.stderr)
        return EXIT_PREEMPTED
    except (RunError, CheckpointError, data_lib.DataError, ValueError) as e:
        _mark_failed(Path(workdir), e)
        print(f"error: {e}", file=sys.stderr)
        return 1


def _mark_failed(workdir: Path, e: BaseException) -> None:
    """status.json says "failed" (keeping its step) when the error came outside the training loop."""
    try:
        old = json.loads((workdir / "status.json").read_text())
        if old.get("status") == "running":
            _status(workdir, "failed", old.get("step", 0), f"{type(e).__name__}: {e}")
    except (OSError, ValueError):
        pass
