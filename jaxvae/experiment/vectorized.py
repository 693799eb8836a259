"""Vectorized sweeps: several runs of one experiment trained together as one compiled program.

::

    python -m jaxvae.experiment.vectorized --config=experiments/X.py \\
        --workdir=runs/X/seed=0 --workdir=runs/X/seed=1 --workdir=runs/X/seed=2 \\
        --overrides='[{"seed": 0}, {"seed": 1}, {"seed": 2}]'

Runs ("members") whose configs differ only in the fields listed in ``jaxvae.experiment.protocol.VECTORIZED_FIELDS``
(the seed, the traced hyperparameters ``train.learning_rate``, ``objective.beta``,
``objective.kl_warmup_steps``, and host-side settings such as ``eval.*``) have the same array shapes.
Their parameters, optimizer states and PRNG keys are stacked on a leading member axis and the fused
training dispatch of ``jaxvae.experiment.train.make_run_steps`` (a ``lax.scan`` over steps) is ``jax.vmap``-ped over
that axis: one vmapped train step inside one scan. Per-member hyperparameters are traced arrays: the
learning rate enters the (unchanged) ``optax.adam`` chain through ``train.learning_rate_schedule(...,
learning_rate=<tracer>)``, beta and the warm-up length through ``train.beta_from``; the optimizer state has
exactly the structure of a solo run's.

Every member is a first-class run: its own workdir with config.json, status.json, metrics.jsonl,
checkpoints (the member's own unstacked TrainState, the same pytree a solo run saves, so a member can
be resumed by ``jaxvae.main`` and vice versa), pictures and results.json (the solo schema, plus
``train.vectorized_group``). A member produces the numbers a solo run with its config produces (to float
tolerance: vmapped matmuls may sum in another order).

* NaN: with ``train.nan_policy=stop`` a member whose loss/gradient turns non-finite is frozen at its
  last good state, its status.json says "failed" with the step and term (the solo message), and the others
  go on. Exit code 1 at the end when any member failed.
* SIGTERM/SIGINT: at the next dispatch boundary every unfinished member is checkpointed (status
  "preempted") and the process exits 3; the same command resumes. Members may resume from different
  steps: the ones behind train alone (the others masked) until the group is in step again.
* Evaluation (validation bound and the final test evaluation): with ``vectorized_eval`` (default: on
  GPU/TPU, off on the CPU; ``$JAXVAE_VECTORIZED_EVAL=1/0`` or ``train_group(vectorized_eval=...)``
  overrides) the members due are evaluated together by ``eval_driver.evaluate_members`` (one vmapped
  program per batch, members with different eval.* settings in separate sub-groups, a member alone in its
  sub-group or a sub-group whose vmapped evaluation raised evaluated on its own); otherwise sequentially per
  member, with the member's unstacked parameters (the same code as solo runs). Both give the solo numbers.
  Measured 2026-11-25 on this 2-core CPU (8 members of the 784-200-200-50 MLP, 1000 test examples, batch
  100, ks 1,5,50,500, ``benchmarks/eval_members_bench.py``): sequential 17.5 s, vmapped 17.8 s (0.98x),
  hence off on the CPU.
* Devices: a ("member", "data") mesh over ``parallel.num_devices`` devices (``parallel.make_group_mesh``):
  the members are split into ``parallel.member_shards`` device groups (default gcd(members, devices)),
  each member's batch is data-parallel over its group's devices. Tested on 4 forced CPU devices (1x4 data,
  2x2, 4x1) and on 2 processes (members split over them, or data-parallel): the same numbers as one device.
* The update of step t is one ``lax.cond`` for the whole group on "every active member's loss and gradient
  are finite" (``train.make_train_step(member_axis=...)``), so the common case is a plain vmapped Adam
  update; only a step where some member is bad pays for per-member selects.

Exit codes as ``jaxvae.main``: 0 all finished, 3 preempted, 1 a member failed or an error, 2 invalid flags.
"""

from __future__ import annotations

import signal as _signal

if __name__ == "__main__":  # before any import starts a thread (runner.sigterm_interrupts says why)
    _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGTERM, _signal.SIGINT))

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxvae import data as data_lib  # noqa: E402
from jaxvae.experiment import init_from, parallel  # noqa: E402
from jaxvae.experiment import runner as R  # noqa: E402
from jaxvae.experiment import train as train_lib  # noqa: E402
from jaxvae.experiment.checkpoints import CheckpointError, Checkpoints  # noqa: E402
from jaxvae.experiment.eval_driver import evaluate_members  # noqa: E402
from jaxvae.experiment.metrics import MetricWriter  # noqa: E402
from jaxvae.experiment.protocol import VECTORIZED_TRACED_FIELDS, is_vectorizable_field  # noqa: E402
from jaxvae.experiment.configs import flatten  # noqa: E402

__all__ = ["GroupError", "member_configs", "check_group", "stack_hparams", "stack_trees", "train_group",
           "main_entry"]


class GroupError(ValueError):
    """The configs cannot be trained as one vectorized group (they differ in a shape-changing field)."""


# -- configs ----------------------------------------------------------------------------------------
def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def member_configs(config: ml_collections.ConfigDict, overrides: Sequence[dict]) -> list:
    """One validated config per member: ``config`` with the member's dotted-path overrides applied."""
    from jaxvae.experiment.validation import override, validate_config

    out = []
    for ov in overrides:
        c = override(config, {k: _tuplify(v) for k, v in ov.items()})
        validate_config(c)
        out.append(c)
    return out


def differing_fields(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if any(f.get(k) != flats[0].get(k) for f in flats[1:])]


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """GroupError unless the configs differ only in vectorizable fields (``jaxvae.experiment.protocol``'s list)."""
    bad = [k for k in differing_fields(configs) if not is_vectorizable_field(k)]
    if bad:
        raise GroupError(f"these runs cannot be vectorized: they differ in {', '.join(bad)} (only "
                         "fields that keep every array shape may differ, see jaxvae.sweeps.VECTORIZED_FIELDS); "
                         "train them as separate runs")


def stack_hparams(configs) -> dict:
    """The traced per-member hyperparameters of a group's configs, stacked (float32/int32 arrays of shape
    (members,)): the ``hparams`` argument of ``make_group_steps``' step functions."""
    assert set(VECTORIZED_TRACED_FIELDS) == {"train.learning_rate", "objective.beta", "objective.kl_warmup_steps"}
    return {
        "learning_rate": jnp.asarray([c.train.learning_rate for c in configs], jnp.float32),
        "beta": jnp.asarray([c.objective.beta for c in configs], jnp.float32),
        "kl_warmup_steps": jnp.asarray([int(c.objective.kl_warmup_steps or 0) for c in configs], jnp.int32),
    }


def stack_trees(trees):
    """The pytrees (e.g. the members' train states) stacked leaf by leaf along a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def _member(stacked, i: int, mesh=None):
    """Member i's unstacked pytree; with ``mesh``, replicated over it (where evaluation runs; a jitted
    gather, so it also works when the members are spread over several processes)."""
    if mesh is None:
        return jax.tree_util.tree_map(lambda a: a[i], stacked)
    return parallel.take(stacked, i, mesh)


def make_group_steps(model, config, tx, tx_for, steps_per_epoch: int, batch_size: int, mesh,
                     per_member_data: bool) -> Callable:
    """``group_steps(stacked_state, x_train, hp, active, num_steps) -> (stacked_state, StepInfo)``:
    the solo ``run_steps`` vmapped over the member axis (inactive members keep their state).

    With a ("member", "data") ``mesh`` (``parallel.make_group_mesh``) the member axis is split over the
    mesh's member axis and each member's batch over its data axis."""
    raw = train_lib.make_run_steps(model, config, tx, steps_per_epoch, batch_size, mesh, tx_for=tx_for,
                                   jit=False, member_axis=parallel.MEMBER_AXIS)
    spmd = parallel.MEMBER_AXIS if mesh is not None and parallel.member_shards(mesh) > 1 else None

    def group_steps(state, x_train, hp, active, num_steps):
        def one(s, x, h):
            new, info = raw(s, x, num_steps, h)
            new = jax.tree_util.tree_map(lambda u, v: jnp.where(h["active"], u, v), new, s)
            return new, info

        return jax.vmap(one, in_axes=(0, 0 if per_member_data else None, 0), axis_name=parallel.MEMBER_AXIS,
                        spmd_axis_name=spmd)(state, x_train, dict(hp, active=active))

    return jax.jit(group_steps, static_argnums=4, donate_argnums=0)


class _Member:
    """Host-side bookkeeping of one member (what train_and_evaluate keeps in local variables)."""

    def __init__(self, index, config, workdir, dataset):
        self.i, self.config, self.workdir, self.dataset = index, config, Path(workdir), dataset
        self.ckpts = None
        self.writer = None
        self.last_good = None
        self.step = 0
        self.state = "running"  # running | failed | preempted | finished
        self.error = None
        self.trained_examples = 0
        self.train_seconds = 0.0
        self.valid_result = None
        self.progress = R.load_progress(self.workdir, None)  # time and examples of earlier segments
        self.next_log = 0
        self.label = f"[{index}:{Path(workdir).name}]"

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.ckpts is not None:
            self.ckpts.close()


# -- evaluation ---------------------------------------------------------------------------------------
def vectorized_eval_default() -> bool:
    """Whether a group's evaluation is vmapped over its members: ``$JAXVAE_VECTORIZED_EVAL`` (1/0) when
    set, else only off the CPU (on the CPU it measured no faster than member after member, 0.98x:
    docs/vectorized.md)."""
    env = os.environ.get("JAXVAE_VECTORIZED_EVAL", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return jax.default_backend() != "cpu"


def _valid_spec(m):
    return R.valid_eval_spec(m.config, m.dataset)


def _test_spec(m):
    x, _, key, kw = R.final_eval_spec(m.config, m.dataset)
    return x, key, kw


def _evaluate_together(model, stacked, members, spec, mesh, log, what: str) -> dict:
    """``{member index: evaluate_split's dict}`` for ``members``, by ``evaluate_members``: one call per
    sub-group of members with equal evaluation settings (``spec(m) -> (x, key, kwargs)``, the runner's
    ``*_eval_spec``), i.e. the same eval.* values and number of examples. Members alone in their sub-group
    are left out, and so is a sub-group whose vmapped evaluation raised (said in the log): the caller
    evaluates the members it is not given one by one, as a solo run does."""
    groups: dict[str, list] = {}
    for m in members:
        x, key, kw = spec(m)
        kw = dict(kw)
        seed = kw.pop("seed")
        tag = json.dumps([kw, list(np.shape(x))], sort_keys=True, default=str)
        groups.setdefault(tag, []).append((m, x, key, seed, kw))
    out = {}
    for entries in groups.values():
        if len(entries) < 2:
            continue
        ms, xs, keys, seeds, kws = zip(*entries)
        idx = jnp.asarray([m.i for m in ms])
        try:
            params = parallel.take(stacked.params, idx, mesh)
            res = evaluate_members(model, params, list(xs), list(keys), list(seeds), mesh=mesh, **kws[0])
        except Exception as e:  # noqa: BLE001 - the sequential path below still evaluates these members
            log(f"vectorized {what} evaluation of members {', '.join(m.label for m in ms)} failed "
                f"({type(e).__name__}: {e}); evaluating them one by one (sequential path)")
            continue
        out.update({m.i: r for m, r in zip(ms, res)})
    return out


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str | Path], *,
                allow_config_change: bool = False, log=print,
                stop_hook: Callable[[int], bool] | None = None,
                vectorized_eval: bool | None = None) -> list[dict | None]:
    """Trains and evaluates the members; returns each member's results dict (None for a failed member).

    Raises ``runner.Preempted`` after SIGTERM/SIGINT (every unfinished member checkpointed), or when
    ``stop_hook(step)`` (a test hook, called after each dispatch) returns True. ``vectorized_eval``: evaluate
    the members (validation and test) with one vmapped program (``eval_driver.evaluate_members``) instead of
    member after member; default ``vectorized_eval_default()``.
    """
    if vectorized_eval is None:
        vectorized_eval = vectorized_eval_default()
    configs = list(configs)
    if len(configs) != len(workdirs) or not configs:
        raise GroupError(f"{len(workdirs)} workdirs for {len(configs)} configs")
    if len({str(Path(w).resolve()) for w in workdirs}) != len(workdirs):
        raise GroupError("two members share a workdir")
    check_group(configs)
    R.forget_earlier_signal()
    with R.workdir_locks([Path(w) for w in workdirs]):  # every member's, before any file is written
        return _train_group(configs, workdirs, allow_config_change, log, stop_hook, vectorized_eval)


def _train_group(configs, workdirs, allow_config_change, log, stop_hook, vectorized_eval) -> list[dict | None]:
    base = configs[0]
    n = len(configs)
    for c, wd in zip(configs, workdirs):
        R.prepare_workdir(c, Path(wd), allow_config_change)
        R._status(Path(wd), "running", 0, "loading data (vectorized group)")

    # data: one copy unless a member's data differs (static binarization draws with the member's seed)
    from jaxvae.experiment.validation import check_data

    cache, datasets = {}, []
    for c in configs:
        key = json.dumps(c.data.to_dict(), sort_keys=True, default=str) + (
            f"|{c.seed}" if c.data.binarize == "static" else "")
        if key not in cache:
            cache[key] = R.load_data(c)
            for warning in check_data(c, cache[key]):
                log(f"warning: {warning}")
        datasets.append(cache[key])
    per_member_data = len(cache) > 1
    members = [_Member(i, c, wd, d) for i, (c, wd, d) in enumerate(zip(configs, workdirs, datasets))]

    model = R.build_model(base, datasets[0].train.shape[1], datasets[0].image_shape)
    batch_size = base.train.batch_size
    steps_per_epoch = train_lib.steps_per_epoch_for(len(datasets[0].train), batch_size)
    schedule, total_steps = train_lib.learning_rate_schedule(base, steps_per_epoch)
    tx = train_lib.make_optimizer(base, schedule)

    def tx_for(hp):
        sched, _ = train_lib.learning_rate_schedule(base, steps_per_epoch, learning_rate=hp["learning_rate"])
        return train_lib.make_optimizer(base, sched)

    mesh = parallel.make_mesh(base.parallel.num_devices)  # evaluation: data-parallel, as a solo run
    group_mesh = parallel.make_group_mesh(base.parallel.num_devices, n, base.parallel.member_shards)
    parallel.check_divisible(batch_size, group_mesh, "train.batch_size")
    states = []
    try:
        for m in members:
            state = train_lib.create_train_state(model, tx, m.config.seed,
                                                 R.output_bias(m.config, model, m.dataset.train),
                                                 init_data=m.dataset.train)
            state = init_from.apply(m.config, state, tx, lambda s, m=m: log(f"{m.label} {s}"))
            m.ckpts = Checkpoints(m.workdir, m.config.train.keep_checkpoints)
            restored, restored_step = m.ckpts.restore_latest(state._asdict())
            if restored is not None:
                state = train_lib.TrainState(**restored)
                log(f"{m.label} resuming from checkpoint at step {restored_step}")
            m.last_good = restored_step
            m.progress = R.load_progress(m.workdir, restored_step)
            m.valid_result = m.progress["valid"]
            m.step = int(state.step)
            m.writer = MetricWriter(m.workdir, resume_step=m.step, enabled=jax.process_index() == 0,
                                    config=m.config)
            m.next_log = R.next_log_step(m.step, m.config.train.log_every_steps)
            states.append(state)
    except Exception as e:
        for m in members:
            R._status(m.workdir, "failed", m.step, f"{type(e).__name__}: {e}")
            m.close()
        raise
    by_member = parallel.member_sharded(group_mesh)
    stacked = parallel.put(stack_trees(states), by_member)
    del states
    hp = parallel.put(stack_hparams(configs), by_member)
    x_train = (parallel.put(np.stack([d.train for d in datasets]), by_member) if per_member_data
               else parallel.replicate(datasets[0].train, group_mesh))
    group_steps = make_group_steps(model, base, tx, tx_for, steps_per_epoch, batch_size, group_mesh,
                                   per_member_data)

    log(f"{base.name}: vectorized group of {n} runs ({', '.join(str(m.workdir) for m in members)}); "
        f"{model.flow_name} posterior, objective={base.objective.name} "
        f"k={base.objective.k}, {len(datasets[0].train)} training examples, {total_steps} steps "
        f"({total_steps / steps_per_epoch:.1f} epochs) of batch {batch_size}")
    if group_mesh.size > 1:
        log(f"devices: {group_mesh.size} = {parallel.member_shards(group_mesh)} member group(s) x "
            f"{parallel.data_size(group_mesh)} data-parallel")
    differ = differing_fields(configs)
    if differ:
        log("members differ in: " + ", ".join(differ))
    t_start = time.time()

    def save(m, state, step, valid_bound=None):
        m.last_good = R.save_checkpoint(m.ckpts, m.workdir, step, state, valid_bound, m.progress,
                                        time.time() - t_start, m.train_seconds, m.trained_examples, m.valid_result)

    def running():
        return [m for m in members if m.state == "running" and m.step < total_steps]

    try:
        with R._preemption_flag() as flag:
            # agreement point before the first dispatch (a signal during start-up, on any process)
            if running() and R.stop_agreed(flag["signal"] is not None):
                for m in running():
                    m.state = "preempted"
                raise R.preemption(R.stop_reason(flag["signal"]), "nothing new (stopped before training)")
            while running():
                lag = min(m.step for m in running())
                active = [m.state == "running" and m.step == lag for m in members]
                num = train_lib.dispatch_sizes(lag, total_steps, steps_per_epoch,
                                               train_lib.dispatch_steps(base, model))
                t0 = time.time()
                stacked, info = group_steps(stacked, x_train, hp, parallel.put(np.asarray(active), by_member),
                                            num)
                info = parallel.fetch(info, group_mesh)
                steps = parallel.fetch(stacked.step, group_mesh)
                dt = time.time() - t0
                valid_now = {}
                if vectorized_eval:  # the members that validate after this dispatch, evaluated together
                    due = [m for m in members if active[m.i]
                           and not (int(info.bad_step[m.i]) >= 0 and m.config.train.nan_policy == "stop")
                           and R.due_after(m.config, int(steps[m.i]), steps_per_epoch, total_steps)[0]]
                    valid_now = _evaluate_together(model, stacked, due, _valid_spec, mesh, log, "validation")
                for m in members:
                    if not active[m.i]:
                        continue
                    c = m.config
                    bad_step = int(info.bad_step[m.i])
                    if bad_step >= 0 and c.train.nan_policy == "stop":
                        msg = R.nan_stop_message(train_lib.BAD_TERMS[int(info.bad_term[m.i])], bad_step,
                                                 m.last_good, m.workdir)
                        m.state, m.error = "failed", msg
                        m.step = int(steps[m.i])
                        R._status(m.workdir, "failed", m.step, f"RunError: {msg}")
                        log(f"{m.label} error: {msg} (the other members go on)")
                        m.close()
                        continue
                    metrics = {k: float(v[m.i]) for k, v in info.metrics.items()}
                    m.step = step = int(steps[m.i])
                    m.trained_examples += num * batch_size
                    m.train_seconds += dt
                    epoch = step / steps_per_epoch
                    if step >= m.next_log or step == total_steps:
                        R.log_train(m.writer, log, step, total_steps, steps_per_epoch, batch_size, metrics,
                                    m.trained_examples, m.train_seconds, label=f"{m.label} ",
                                    rate_unit="ex/s per run")
                        m.next_log = R.next_log_step(step, c.train.log_every_steps)
                    valid_bound = None
                    need_valid, need_save = R.due_after(c, step, steps_per_epoch, total_steps)
                    if need_save:
                        state = _member(stacked, m.i, mesh)
                        if need_valid:
                            m.valid_result = (valid_now[m.i] if m.i in valid_now
                                              else R._validate(c, model, state, m.dataset, mesh))
                            valid_bound = m.valid_result["iwae"][str(c.eval.valid_k)]
                            m.writer.write(step, "valid", **{f"iwae_{c.eval.valid_k}": valid_bound})
                        save(m, state, step, valid_bound)
                    R._status(m.workdir, "running", step, f"epoch {epoch:.1f} (vectorized group of {n})")
                stop = R.stop_agreed(flag["signal"] is not None or (stop_hook is not None and stop_hook(lag + num)))
                if stop and running():
                    for m in members:
                        if m.state == "running":
                            if R.preemption_save_due(m.step, m.last_good, total_steps):
                                save(m, _member(stacked, m.i, mesh), m.step)
                            m.state = "preempted"
                    why = ("stop requested" if flag["signal"] is None and stop_hook is not None
                           else R.stop_reason(flag["signal"]))
                    raise R.preemption(why, "a checkpoint of every unfinished member")
            # agreement point before the final evaluation (every member's last checkpoint is saved)
            if any(m.state == "running" for m in members) and R.stop_agreed(R.stop_requested()):
                for m in members:
                    if m.state == "running":
                        m.state = "preempted"
                raise R.preemption(R.stop_reason(flag["signal"]), "the final checkpoint of every member "
                                   "(the test evaluation was not started)")
    except R.Preempted as e:
        for m in members:
            if m.state == "preempted":
                R._status(m.workdir, "preempted", m.step, str(e))
            m.close()
        raise
    except Exception as e:
        for m in members:
            if m.state == "running":
                R._status(m.workdir, "failed", m.step, f"{type(e).__name__}: {e}")
            m.close()
        raise
    train_wall = time.time() - t_start

    tests = {}  # the test evaluations of the finished members, computed together
    if vectorized_eval:
        done = [m for m in members if m.state == "running"]
        try:
            for m in done:
                R._status(m.workdir, "running", m.step, "evaluating on the test set (vectorized)")
            tests = _evaluate_together(model, stacked, done, _test_spec, mesh, log, "test")
        except KeyboardInterrupt:
            for m in done:
                R._status(m.workdir, "preempted", m.step, "interrupted during the final evaluation")
                m.close()
            raise
        except Exception as e:  # e.g. out of memory with every member at once: evaluate one at a time
            log(f"the members' joint test evaluation failed ({type(e).__name__}: {e}); "
                "evaluating them one after another")
            tests = {}
    results = []
    for m in members:
        if m.state != "running":
            results.append(None)
            continue
        c = m.config
        state = _member(stacked, m.i, mesh)
        try:
            R._status(m.workdir, "running", m.step, "evaluating on the test set")
            r = R.assemble_results(
                R.final_results(c, model, state.params, m.dataset, m.workdir, tests[m.i]) if m.i in tests
                else R._final_evaluation(c, model, state, m.dataset, m.workdir, mesh), m.valid_result,
                R.train_results(model, c, state, steps_per_epoch, m.progress, train_wall, m.trained_examples,
                                m.train_seconds, vectorized_group=n))
            # agreement point after each member's evaluation (multi-process: a signal on any process stops
            # every process before this member's results.json; single-process runs raised at the signal)
            if jax.process_count() > 1 and R.stop_agreed(R.stop_requested()):
                raise KeyboardInterrupt(R.stop_reason(R._received["signal"]))
            R.write_json(m.workdir / "results.json", r)
            m.writer.log_results(r)  # MLflow / W&B: final metrics, results.json and pictures
            R._status(m.workdir, "finished", int(state.step), "results.json written")
            m.state = "finished"
            log(R.format_results(r))
            results.append(r)
        except KeyboardInterrupt:
            for later in members[m.i:]:
                if later.state == "running":
                    R._status(later.workdir, "preempted", later.step, "interrupted during the final evaluation")
                later.close()
            raise
        except Exception as e:  # one member's evaluation failing must not lose the others
            m.state, m.error = "failed", f"{type(e).__name__}: {e}"
            R._status(m.workdir, "failed", m.step, m.error)
            log(f"{m.label} error: {m.error}")
            results.append(None)
        finally:
            m.close()
    return results


def main_entry(config, workdirs: Sequence[str], overrides: Sequence[dict] | None,
               allow_config_change: bool = False) -> int:
    """0 all members finished, 3 preempted, 1 a member failed or an error (no traceback), 2 bad group."""
    from jaxvae.experiment.validation import ConfigError

    overrides = list(overrides) if overrides is not None else [{} for _ in workdirs]
    if len(overrides) != len(workdirs):
        print(f"error: {len(workdirs)} --workdir flags but {len(overrides)} --overrides entries", file=sys.stderr)
        return 2
    try:
        configs = member_configs(config, overrides)
        check_group(configs)
    except (ConfigError, GroupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with R.workdir_locks([Path(w) for w in workdirs]):
            return _main_entry(configs, workdirs, allow_config_change)
    except (R.locks.WorkdirBusy, R.RunError) as e:  # only from taking the locks: nothing to mark
        print(f"error: {e}", file=sys.stderr)
        return 1


def _main_entry(configs, workdirs, allow_config_change) -> int:
    try:
        with R.sigterm_interrupts():
            results = train_group(configs, workdirs, allow_config_change=allow_config_change)
    except R.Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return R.EXIT_PREEMPTED
    except KeyboardInterrupt:
        for wd in workdirs:
            R.mark_interrupted(Path(wd))
        print("preempted: interrupted outside a training dispatch; run the same command again to resume",
              file=sys.stderr)
        return R.EXIT_PREEMPTED
    except (R.RunError, CheckpointError, data_lib.DataError, GroupError, ValueError) as e:
        for wd in workdirs:
            R._mark_failed(Path(wd), e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = [wd for wd, r in zip(workdirs, results) if r is None]
    if failed:
        print(f"error: {len(failed)} of {len(workdirs)} members failed (see their status.json): "
              + ", ".join(str(f) for f in failed), file=sys.stderr)
        return 1
    return 0


# -- command line -------------------------------------------------------------------------------------
def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Experiment file (experiments/*.py).",
                                             lock_config=True)
    workdir = flags.DEFINE_multi_string("workdir", None, "One per member (repeat the flag).")
    overrides = flags.DEFINE_string(
        "overrides", None, "JSON list of dicts, one per --workdir: each member's dotted-path config "
        "overrides, e.g. '[{\"seed\": 0}, {\"seed\": 1}]' (default: no overrides).")
    allow = flags.DEFINE_bool("allow_config_change", False,
                              "Resume workdirs even though their saved config differs from this one.")
    return config, workdir, overrides, allow


def run():
    from absl import app, flags, logging

    config, workdir, overrides, allow = _define_flags()

    def _parse_flags(argv):  # as jaxvae.main: flag errors are one line and exit code 2
        try:
            return flags.FLAGS(argv)
        except Exception as e:
            from jaxvae.experiment.validation import describe_flag_error

            print(f"error: {describe_flag_error(e, argv)}", file=sys.stderr)
            sys.exit(2)

    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
            return 2
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        from jaxvae.experiment.validation import ConfigError, describe_flag_error, validate_config

        try:
            validate_config(config.value)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:
            print(f"error: {describe_flag_error(e, sys.argv)}", file=sys.stderr)
            return 2
        ov = None
        if overrides.value:
            try:
                ov = json.loads(overrides.value)
                if not isinstance(ov, list) or not all(isinstance(o, dict) for o in ov):
                    raise ValueError("expected a JSON list of objects")
            except ValueError as e:
                print(f"error: --overrides: {e}", file=sys.stderr)
                return 2
        parallel.initialize_distributed(config.value)
        return main_entry(config.value, workdir.value, ov, allow_config_change=allow.value)

    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
