"""The host loop: training a list of members (a solo run is a list of one) from data to results.json.

One copy of everything a run does on the host: set-up and resume (each member from its own latest
checkpoint), the preemption agreement points (``preemption.stop_agreed``: before the first dispatch, after
each dispatch, and before and after the final evaluation), the NaN policy, the log / validate / checkpoint
cadence, the final evaluation (``evaluations``) and each member's outcome in status.json. The device
program is chosen by member count (``programs``): the solo program for one member, the vmapped one for
several. ``runner.train_and_evaluate`` and ``vectorized.train_group`` are thin doors into ``train_members``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import jax

from jaxvae.experiment import building, init_from, parallel
from jaxvae.experiment import preemption as pre
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.checkpoints import Checkpoints
from jaxvae.experiment.evaluations import final_eval_spec, final_results, format_results, valid_eval_spec, validate
from jaxvae.experiment.groups import differing_fields
from jaxvae.experiment.metrics import MetricWriter
from jaxvae.experiment.programs import GroupProgram, SoloProgram
from jaxvae.experiment.protocol import Preempted, RunError
from jaxvae.experiment.workdir import (load_progress, prepare_workdir, workdir_locks, write_json, write_progress,
                                       write_status)


# -- cadence --------------------------------------------------------------------------------------------
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


def due_after(config, step: int, steps_per_epoch: int, total_steps: int) -> tuple[bool, bool]:
    """(validate, checkpoint) after ``step``: a validation is always followed by a checkpoint."""
    validate_now = due_for_validation(config, step, steps_per_epoch, total_steps)
    return validate_now, validate_now or due_for_checkpoint(config, step, steps_per_epoch, total_steps)


def next_log_step(step: int, every: int) -> int:
    return (step // every + 1) * every


def nan_stop_message(term: str, bad_step: int, last_good: int | None, workdir: Path) -> str:
    """The train.nan_policy=stop error: where it happened, what is kept, what to change."""
    where = (f"the last good checkpoint is step {last_good} in {Path(workdir) / 'checkpoints'}"
             if last_good is not None else "no checkpoint was written yet")
    return (f"non-finite {term} at step {bad_step}; stopped without applying it ({where}). "
            "Lower train.learning_rate, set train.grad_clip_norm, or set train.nan_policy=skip to skip such "
            "updates")


def fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
        f"ETA {fmt_eta(eta)}")


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


# -- members --------------------------------------------------------------------------------------------
class Member:
    """Host-side bookkeeping of one member: its config, workdir, data, checkpoints and metric writer, and
    where it stands. ``state``: running | failed | preempted | finished; ``error``: the exception that
    failed it (a solo run raises it)."""

    def __init__(self, index: int, config, workdir, dataset, grouped: bool):
        self.i, self.config, self.workdir, self.dataset = index, config, Path(workdir), dataset
        self.ckpts: Checkpoints | None = None
        self.writer: MetricWriter | None = None
        self.last_good: int | None = None
        self.step = 0
        self.state = "running"
        self.error: BaseException | None = None
        self.trained_examples = 0
        self.train_seconds = 0.0
        self.valid_result = None
        self.results: dict | None = None  # results.json's content once finished
        self.progress = load_progress(self.workdir, None)
        self.next_log = 0
        self.label = f"[{index}:{self.workdir.name}]" if grouped else ""
        self.prefix = f"{self.label} " if grouped else ""

    def end(self, status: str, message: str) -> None:
        """Closes the metric writer and checkpoint manager and records the outcome in status.json. "finished"
        is written after both are flushed, so it promises that everything is on disk; any other outcome
        before, so that a slow or interrupted flush cannot leave the member looking "running"."""
        if status != "finished":
            write_status(self.workdir, status, self.step, message)
        self.close()
        if status == "finished":
            write_status(self.workdir, status, self.step, message)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.ckpts is not None:
            self.ckpts.close()
            self.ckpts = None


def _load_datasets(configs, log) -> tuple[list, bool]:
    """Each member's data: one copy unless a member's data differs (static binarization draws with the
    member's seed). Returns (datasets, whether they differ)."""
    from jaxvae.experiment.validation import check_data

    cache, datasets = {}, []
    for c in configs:
        key = json.dumps(c.data.to_dict(), sort_keys=True, default=str) + (
            f"|{c.seed}" if c.data.binarize == "static" else "")
        if key not in cache:
            cache[key] = building.load_data(c)
            for warning in check_data(c, cache[key]):  # DataError for data the model cannot use
                log(f"warning: {warning}")
        datasets.append(cache[key])
    return datasets, len(cache) > 1


def _start(members, model, tx, log) -> list:
    """Each member's initial TrainState (init_from, then its latest checkpoint wins), checkpoint manager,
    progress and metric writer."""
    states = []
    for m in members:
        state = train_lib.create_train_state(model, tx, m.config.seed,
                                             building.output_bias(m.config, model, m.dataset.train),
                                             init_data=m.dataset.train)
        state = init_from.apply(m.config, state, tx, lambda s, m=m: log(f"{m.prefix}{s}"))
        m.ckpts = Checkpoints(m.workdir, m.config.train.keep_checkpoints)
        restored, restored_step = m.ckpts.restore_latest(state._asdict())
        if restored is not None:
            state = train_lib.TrainState(**restored)
            log(f"{m.prefix}resuming from checkpoint at step {restored_step}")
        m.last_good = restored_step
        m.progress = load_progress(m.workdir, restored_step)
        m.valid_result = m.progress["valid"]
        m.step = int(state.step)
        m.writer = MetricWriter(m.workdir, resume_step=m.step, enabled=jax.process_index() == 0, config=m.config)
        m.next_log = next_log_step(m.step, m.config.train.log_every_steps)
        states.append(state)
    return states


# -- the loop -------------------------------------------------------------------------------------------
def train_members(configs: Sequence, workdirs: Sequence[str | Path], *, allow_config_change: bool = False,
                  log=print, stop_hook: Callable[[int], bool] | None = None,
                  vectorized_eval: bool = False) -> list:
    """Trains and evaluates the members; returns the list of members (``Member``), each with its outcome;
    a finished member's results.json is written. Raises ``Preempted`` after SIGTERM/SIGINT (every unfinished
    member checkpointed) or when ``stop_hook(step)`` (a test hook, called after each dispatch) returns True.
    Holds every member's workdir lock throughout. Several members must form a valid vectorized group
    (``vectorized.check_group``); ``vectorized_eval``: evaluate them with one vmapped program."""
    workdirs = [Path(w) for w in workdirs]
    pre.forget_earlier_signal()
    with workdir_locks(workdirs):  # every member's, before any file is written
        return _train_members(list(configs), workdirs, allow_config_change, log, stop_hook, vectorized_eval)


def _train_members(configs, workdirs, allow_config_change, log, stop_hook, vectorized_eval) -> list:
    base, n = configs[0], len(configs)
    grouped = n > 1
    for c, wd in zip(configs, workdirs):
        prepare_workdir(c, wd, allow_config_change)
        write_status(wd, "running", 0, "loading data (vectorized group)" if grouped else "loading data")
    datasets, per_member_data = _load_datasets(configs, log)
    members = [Member(i, c, wd, d, grouped) for i, (c, wd, d) in enumerate(zip(configs, workdirs, datasets))]

    model = building.build_model(base, datasets[0].train.shape[1], datasets[0].image_shape)
    batch_size = base.train.batch_size
    steps_per_epoch = train_lib.steps_per_epoch_for(len(datasets[0].train), batch_size)
    schedule, total_steps = train_lib.learning_rate_schedule(base, steps_per_epoch)
    tx = train_lib.make_optimizer(base, schedule)
    nd = base.parallel.num_devices
    train_mesh = (parallel.make_group_mesh(nd, n, base.parallel.member_shards, batch_size=batch_size) if grouped
                  else parallel.make_mesh(nd, batch_size=batch_size))
    parallel.check_divisible(batch_size, train_mesh, "train.batch_size")
    mesh = parallel.flat_mesh(train_mesh)  # evaluation: data-parallel over the same devices
    note = parallel.fitted_note(train_mesh, nd, batch_size)
    if note:
        log(note)
    try:
        states = _start(members, model, tx, log)
    except Exception as e:
        for m in members:
            m.end("failed", f"{type(e).__name__}: {e}")
        raise
    if grouped:
        program = GroupProgram(model, base, configs, tx, steps_per_epoch, batch_size, train_mesh, mesh, states,
                               datasets, per_member_data)
    else:
        program = SoloProgram(model, base, tx, steps_per_epoch, batch_size, mesh, states[0], datasets[0].train)
    del states
    what = (f"vectorized group of {n} runs ({', '.join(str(m.workdir) for m in members)}); " if grouped else "")
    log(f"{base.name}: {what}{model.flow_name} posterior, objective={base.objective.name} "
        f"k={base.objective.k}, {len(datasets[0].train)} training examples, {total_steps} steps "
        f"({total_steps / steps_per_epoch:.1f} epochs) of batch {batch_size}")
    if grouped and train_mesh.size > 1:
        log(f"devices: {train_mesh.size} = {parallel.member_shards(train_mesh)} member group(s) x "
            f"{parallel.data_size(train_mesh)} data-parallel")
    differ = differing_fields(configs) if grouped else []
    if differ:
        log("members differ in: " + ", ".join(differ))
    t_start = time.time()

    def save(m, step, valid_bound=None, state=None):
        m.last_good = step
        write_progress(m.workdir, step, m.progress, time.time() - t_start, m.train_seconds, m.trained_examples,
                       m.valid_result)  # before the checkpoint (write_progress says why)
        state = program.member_state(m.i) if state is None else state
        m.ckpts.save(step, state._asdict(), valid_bound)

    def running():
        return [m for m in members if m.state == "running" and m.step < total_steps]

    def preempt(unfinished, why, saved):
        for m in unfinished:
            m.state = "preempted"
        return pre.preemption(why, saved)

    def stopped_at(m):
        return f"a checkpoint at step {m.step}" if not grouped else "a checkpoint of every unfinished member"

    try:
        with pre.preemption_flag() as flag:
            # agreement point before the first dispatch (a signal during start-up, on any process)
            if running() and pre.stop_agreed(flag["signal"] is not None):
                raise preempt(running(), pre.stop_reason(flag["signal"]),
                              pre.nothing_trained(members[0].last_good) if not grouped
                              else "nothing new (stopped before training)")
            while running():
                lag = min(m.step for m in running())
                active = [m.state == "running" and m.step == lag for m in members]
                num = train_lib.dispatch_sizes(lag, total_steps, steps_per_epoch,
                                               train_lib.dispatch_steps(base, model))
                t0 = time.time()
                d = program.advance(active, num)
                dt = time.time() - t0
                valid_now = {}
                if grouped and vectorized_eval:  # the members that validate after this dispatch, together
                    due = [m for m in members if active[m.i]
                           and not (d.bad_steps[m.i] >= 0 and m.config.train.nan_policy == "stop")
                           and due_after(m.config, d.steps[m.i], steps_per_epoch, total_steps)[0]]
                    valid_now = program.evaluate_together(due, _valid_spec, log, "validation")
                for m in members:
                    if active[m.i]:
                        _after_dispatch(m, d, num, dt, valid_now, program, model, mesh, save, log, total_steps,
                                        steps_per_epoch, batch_size, grouped, n)
                stop = pre.stop_agreed(flag["signal"] is not None or (stop_hook is not None and stop_hook(lag + num)))
                if stop and running():
                    unfinished = [m for m in members if m.state == "running"]
                    for m in unfinished:
                        if pre.preemption_save_due(m.step, m.last_good, total_steps):
                            save(m, m.step)
                    why = ("stop requested" if flag["signal"] is None and stop_hook is not None
                           else pre.stop_reason(flag["signal"]))
                    raise preempt(unfinished, why, stopped_at(unfinished[0]))
            # agreement point before the final evaluation (every member's last checkpoint is saved)
            unfinished = [m for m in members if m.state == "running"]
            if unfinished and pre.stop_agreed(pre.stop_requested()):
                raise preempt(unfinished, pre.stop_reason(flag["signal"]),
                              (f"the final checkpoint at step {unfinished[0].step}" if not grouped
                               else "the final checkpoint of every member") + " (the test evaluation was not started)")
    except Preempted as e:
        for m in members:
            if m.state == "preempted":
                m.end("preempted", str(e))
            m.close()
        raise
    except Exception as e:
        for m in members:
            if m.state == "running":
                m.end("failed", f"{type(e).__name__}: {e}")
            m.close()
        raise
    _evaluate(members, program, model, mesh, log, time.time() - t_start, steps_per_epoch, grouped, n,
              vectorized_eval)
    return members


def _valid_spec(m):
    return valid_eval_spec(m.config, m.dataset)


def _test_spec(m):
    x, _, key, kw = final_eval_spec(m.config, m.dataset)
    return x, key, kw


def _after_dispatch(m, d, num, dt, valid_now, program, model, mesh, save, log, total_steps, steps_per_epoch,
                    batch_size, grouped, n) -> None:
    """One active member after a dispatch: the NaN policy, the log line, validation and checkpoint."""
    c = m.config
    m.step = step = d.steps[m.i]
    if d.bad_steps[m.i] >= 0 and c.train.nan_policy == "stop":
        msg = nan_stop_message(train_lib.BAD_TERMS[d.bad_terms[m.i]], d.bad_steps[m.i], m.last_good, m.workdir)
        m.state, m.error = "failed", RunError(msg)
        m.end("failed", f"RunError: {msg}")
        if grouped:
            log(f"{m.label} error: {msg} (the other members go on)")
        return
    m.trained_examples += num * batch_size
    m.train_seconds += dt
    if step >= m.next_log or step == total_steps:
        log_train(m.writer, log, step, total_steps, steps_per_epoch, batch_size, d.metrics[m.i],
                  m.trained_examples, m.train_seconds, label=m.prefix, rate_unit="ex/s per run" if grouped else "ex/s")
        m.next_log = next_log_step(step, c.train.log_every_steps)
    need_valid, need_save = due_after(c, step, steps_per_epoch, total_steps)
    if need_save:  # (a validation is always followed by a checkpoint: one gather of the member's state)
        state, valid_bound = program.member_state(m.i), None
        if need_valid:
            m.valid_result = (valid_now[m.i] if m.i in valid_now
                              else validate(c, model, state.params, m.dataset, mesh))
            valid_bound = m.valid_result["iwae"][str(c.eval.valid_k)]
            m.writer.write(step, "valid", **{f"iwae_{c.eval.valid_k}": valid_bound})
        save(m, step, valid_bound, state)
    write_status(m.workdir, "running", step, f"epoch {step / steps_per_epoch:.1f}"
                 + (f" (vectorized group of {n})" if grouped else ""))


def _evaluate(members, program, model, mesh, log, train_wall, steps_per_epoch, grouped, n,
              vectorized_eval) -> None:
    """The final evaluation of every member still running; each finished member's results.json."""
    tests = {}  # the finished members' test bounds, computed together
    done = [m for m in members if m.state == "running"]
    if grouped and vectorized_eval and done:
        try:
            for m in done:
                write_status(m.workdir, "running", m.step, "evaluating on the test set (vectorized)")
            tests = program.evaluate_together(done, _test_spec, log, "test")
        except KeyboardInterrupt:
            for m in done:
                m.end("preempted", "interrupted during the final evaluation")
            raise
        except Exception as e:  # e.g. out of memory with every member at once: evaluate one at a time
            log(f"the members' joint test evaluation failed ({type(e).__name__}: {e}); "
                "evaluating them one after another")
            tests = {}
    for m in done:
        c = m.config
        state = program.member_state(m.i)
        try:
            write_status(m.workdir, "running", m.step, "evaluating on the test set")
            extra = {"vectorized_group": n} if grouped else {}
            r = assemble_results(
                final_results(c, model, state.params, m.dataset, m.workdir, bounds=tests.get(m.i), mesh=mesh),
                m.valid_result, train_results(model, c, state, steps_per_epoch, m.progress, train_wall,
                                              m.trained_examples, m.train_seconds, **extra))
            # agreement point after each member's evaluation (a signal during it, on any process, stops
            # every process before this member's results.json; the relaunch evaluates the final checkpoint
            # again). Single-process runs raised KeyboardInterrupt at the signal.
            if pre.stop_agreed(pre.stop_requested()):
                if not grouped:
                    raise pre.preemption(pre.stop_reason(pre.received_signal()), f"the final checkpoint at step "
                                         f"{m.step} (results.json not written)")
                raise KeyboardInterrupt(pre.stop_reason(pre.received_signal()))
            write_json(m.workdir / "results.json", r)
            m.writer.log_results(r)  # MLflow / W&B: final metrics, results.json and pictures
            m.state, m.results = "finished", r
            m.end("finished", "results.json written")
            log(format_results(r))
        except Preempted as e:
            m.state = "preempted"
            m.end("preempted", str(e))
            raise
        except KeyboardInterrupt:
            for later in members[m.i:]:
                if later.state == "running":
                    later.end("preempted", "interrupted during the final evaluation")
                later.close()
            raise
        except Exception as e:  # one member's evaluation failing must not lose the others
            m.state, m.error = "failed", e
            m.end("failed", f"{type(e).__name__}: {e}")
            if grouped:
                log(f"{m.label} error: {type(e).__name__}: {e}")
