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
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402

from jaxvae.experiment import locks, loop, parallel  # noqa: E402
from jaxvae.experiment.groups import GroupError, check_group, differing_fields, member_configs  # noqa: E402
from jaxvae.experiment.programs import make_group_steps, stack_hparams, stack_trees  # noqa: E402
from jaxvae.experiment.protocol import RunError  # noqa: E402
from jaxvae.experiment.runner import exit_code  # noqa: E402
from jaxvae.experiment.workdir import workdir_locks  # noqa: E402

__all__ = ["GroupError", "member_configs", "check_group", "differing_fields", "stack_hparams", "stack_trees",
           "make_group_steps", "train_group", "main_entry"]


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


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str | Path], *,
                allow_config_change: bool = False, log=print,
                stop_hook: Callable[[int], bool] | None = None,
                vectorized_eval: bool | None = None) -> list[dict | None]:
    """Trains and evaluates the members; returns each member's results dict (None for a failed member).

    The host loop is ``loop.train_members`` (a solo run's too; one member gets the solo device program).
    Raises ``Preempted`` after SIGTERM/SIGINT (every unfinished member checkpointed), or when
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
    members = loop.train_members(configs, workdirs, allow_config_change=allow_config_change, log=log,
                                 stop_hook=stop_hook, vectorized_eval=vectorized_eval)
    return [m.results for m in members]


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
    results = []

    def train():
        results.extend(train_group(configs, workdirs, allow_config_change=allow_config_change))

    try:
        with workdir_locks([Path(w) for w in workdirs]):
            code = exit_code(workdirs, train, errors=(GroupError,))
    except (locks.WorkdirBusy, RunError) as e:  # only from taking the locks: nothing to mark
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = [wd for wd, r in zip(workdirs, results) if r is None]
    if code == 0 and failed:
        print(f"error: {len(failed)} of {len(workdirs)} members failed (see their status.json): "
              + ", ".join(str(f) for f in failed), file=sys.stderr)
        return 1
    return code


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
