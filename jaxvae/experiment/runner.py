"""``train_and_evaluate(config, workdir)``: one experiment from data to results.json, and ``main_entry``,
which maps its outcome to an exit code (0 finished, 3 preempted, 1 a clear error).

Train (fused ``lax.scan`` dispatches over the on-device training set), checkpoint (orbax; resume from
the latest), validate (best checkpoint by the validation IWAE bound), evaluate every test example,
write metrics, pictures and ``results.json``. The work is done by the host loop (``loop.train_members``)
with a list of one member; a vectorized group (``vectorized.train_group``) goes through the same loop.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import ml_collections

from jaxvae import data as data_lib
from jaxvae.experiment import locks, loop
from jaxvae.experiment.checkpoints import CheckpointError
from jaxvae.experiment.preemption import sigterm_interrupts
from jaxvae.experiment.protocol import EXIT_PREEMPTED, Preempted, RunError
from jaxvae.experiment.workdir import mark_failed, mark_interrupted, workdir_locks

__all__ = ["RunError", "Preempted", "train_and_evaluate", "main_entry", "exit_code"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *,
                       allow_config_change: bool = False, log=print) -> dict:
    """Train, checkpoint, evaluate; returns the results dict also written to <workdir>/results.json.
    Holds the workdir's lock throughout (``locks.WorkdirBusy`` when another process has it). Raises what
    stopped the run: ``RunError`` (e.g. a non-finite loss with train.nan_policy=stop), ``Preempted``, or the
    error of a failed final evaluation."""
    (member,) = loop.train_members([config], [workdir], allow_config_change=allow_config_change, log=log)
    if member.error is not None:
        raise member.error
    return member.results


def exit_code(workdirs: Sequence[str | Path], train: Callable[[], object], *, errors: tuple = ()) -> int:
    """Runs ``train()`` (with SIGTERM/SIGINT handled, ``sigterm_interrupts``) and maps its outcome to an exit
    code, the message on stderr without a traceback: 0 finished, 3 preempted (also when interrupted outside a
    dispatch: status.json says so), 1 a clear error (status.json "failed"). ``errors``: more exception types
    that are clear errors."""
    workdirs = [Path(w) for w in workdirs]
    try:
        with sigterm_interrupts():
            train()
        return 0
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # SIGINT/SIGTERM before training started or during the final evaluation
        for wd in workdirs:
            mark_interrupted(wd)
        print("preempted: interrupted outside a training dispatch; run the same command again to resume",
              file=sys.stderr)
        return EXIT_PREEMPTED
    except (RunError, CheckpointError, data_lib.DataError, ValueError, *errors) as e:
        for wd in workdirs:
            mark_failed(wd, e)
        print(f"error: {e}", file=sys.stderr)
        return 1


def main_entry(config, workdir, allow_config_change=False) -> int:
    """Runs and maps outcomes to exit codes: 0 finished, 3 preempted, 1 a clear error (no traceback).
    The workdir's lock is taken first: a busy workdir is refused (exit 1) without touching any file."""
    try:
        with workdir_locks([Path(workdir)]):
            return exit_code([workdir], lambda: train_and_evaluate(config, workdir,
                                                                   allow_config_change=allow_config_change))
    except (locks.WorkdirBusy, RunError) as e:  # only from taking the lock: nothing of the run's to mark
        print(f"error: {e}", file=sys.stderr)
        return 1
