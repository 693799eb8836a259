"""Checkpoints with orbax: the last N states (for resume) and the best by validation bound.

Layout: ``<workdir>/checkpoints/latest/<step>`` and ``<workdir>/checkpoints/best/<step>``. Orbax
writes each step to a temporary folder (``<step>.orbax-checkpoint-tmp-*``) and renames it when
complete, so a crash or ``kill -9`` mid-save never leaves a half-written step that looks finished (the
temporary folder is removed when the workdir is next opened). A finished step that still fails to
restore (a truncated, deleted or garbled file) is moved to ``<workdir>/checkpoints/corrupt/`` with a
warning, and the previous step is used. If no step restores at all, ``restore_latest`` raises
``CheckpointError`` rather than silently starting from scratch (the model's shape may have changed).

Test hook: with the environment variable ``JAXVAE_TEST_SLOW_SAVE_S=<seconds>`` every step's commit
(the rename of its temporary folder) is delayed by that many seconds, so tests can kill a run in the
middle of a checkpoint write. It is read when ``Checkpoints`` is created; never set it in real runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

SLOW_SAVE_ENV = "JAXVAE_TEST_SLOW_SAVE_S"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be restored; the message says what to do."""


class _ShapeMismatch(CheckpointError):
    """A checkpoint that restores but belongs to a model of another shape."""


def _manager(path: Path, max_to_keep: int, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        best_fn=(lambda m: m["valid_bound"]) if best else None,
        best_mode="max",
        keep_checkpoints_without_metrics=False if best else True,
    )
    with _without_orbax_metadata_warnings():
        return ocp.CheckpointManager(path.absolute(), options=options)


class _DropMissingMetadataWarning(logging.Filter):
    """Orbax warns "Metadata file does not exist: <step>/_CHECKPOINT_METADATA" for a step folder emptied by
    a crash or by hand; jaxvae reports that step in its own line when it fails to restore."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Metadata file does not exist")


@contextlib.contextmanager
def _without_orbax_metadata_warnings():
    absl_logger, drop = logging.getLogger("absl"), _DropMissingMetadataWarning()
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)


def _install_slow_save_hook(seconds: float) -> None:
    """Test hook (see the module docstring): delay the commit of every checkpoint step folder."""
    try:
        from orbax.checkpoint._src.path import atomicity
    except ImportError:  # orbax moved it; the hook then does nothing
        return
    cls = atomicity.AtomicRenameTemporaryPath
    if getattr(cls.finalize, "_jaxvae_slow", None) == seconds:
        return
    original = getattr(cls.finalize, "_jaxvae_original", cls.finalize)

    async def finalize(self, *args, **kwargs):
        if self.get_final().name.isdigit():  # the step folder, not an item inside it
            await asyncio.sleep(seconds)
        return await original(self, *args, **kwargs)

    finalize._jaxvae_slow = seconds
    finalize._jaxvae_original = original
    cls.finalize = finalize


class Checkpoints:
    """The run's two checkpoint managers. ``state`` is any pytree of arrays (the TrainState)."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        self.root = Path(workdir) / "checkpoints"
        slow = os.environ.get(SLOW_SAVE_ENV)
        if slow:
            _install_slow_save_hook(float(slow))
        self._keep = max(1, keep)
        try:
            self.latest = _manager(self.root / "latest", self._keep, best=False)
            self.best = _manager(self.root / "best", 1, best=True)
        except OSError as e:
            raise CheckpointError(f"cannot open the checkpoint folder {self.root} ({_short(e)}); "
                                  "check the disk and the permissions of --workdir") from None
        self._prune(self.latest, self._keep, best=False)
        self._prune(self.best, 1, best=True)

    @staticmethod
    def _prune(mngr: ocp.CheckpointManager, keep: int, best: bool) -> None:
        """Deletes the steps beyond what the manager keeps (the newest ``keep``; for "best" the best one),
        as its next save would: a kill -9 between a save's commit and orbax's deletion of the step it
        replaces leaves one more, and a run that saves nothing more (e.g. killed after its final save)
        would keep it for good (fault campaign, 2026-11-30: best steps [54, 81] instead of [81])."""
        steps = sorted(mngr.all_steps())
        if len(steps) <= keep:
            return
        kept = {mngr.best_step()} if best else set(steps[-keep:])
        if None in kept:
            return
        for step in steps:
            if step not in kept:
                try:
                    mngr.delete(step)
                except Exception as e:  # noqa: BLE001 - an extra old step is harmless
                    log.warning("could not delete the superseded checkpoint step %d in %s (%s)", step,
                                mngr.directory, _short(e))

    def save(self, step: int, state: Any, valid_bound: float | None = None) -> None:
        """Writes ``state`` as ``step`` (and as the best one when ``valid_bound`` is given).

        Raises CheckpointError (disk full, unwritable folder, ...); the previous checkpoints stay intact.
        """
        state = jax.device_get(state)
        previous = self.latest.latest_step()
        # The best copy first, then "latest": a relaunch resumes from "latest", so a kill -9 between the two
        # saves then retrains (deterministically) to this step and saves both again. In the other order it
        # found the step done and never wrote the best copy (fault campaign, 2026-11-30: a group member's
        # best step stayed 54 where the uninterrupted run's was 81).
        todo = []
        if valid_bound is not None:
            todo.append((self.best, {"metrics": {"valid_bound": float(valid_bound)}}))
        todo.append((self.latest, {}))
        for mngr, extra in todo:
            try:
                if step in mngr.all_steps():  # recomputed after a fallback past a corrupt step
                    mngr.delete(step)
                mngr.save(step, args=ocp.args.StandardSave(state), force=True, **extra)
                mngr.wait_until_finished()
            except Exception as e:
                last = (f"the last completed checkpoint is step {previous} in {self.latest.directory}"
                        if previous is not None else "no checkpoint was completed before")
                raise CheckpointError(
                    f"could not write the checkpoint of step {step} to {mngr.directory} ({_short(e)}); "
                    f"{last}. Free disk space or fix the folder, then run the same command again to "
                    "resume") from None

    def restore_latest(self, template: Any) -> tuple[Any, int] | tuple[None, None]:
        """The newest state that restores; (None, None) when there is no checkpoint at all.

        Steps that fail to restore are moved to ``checkpoints/corrupt/`` (with a warning) once an older
        step restored; if none restores, CheckpointError.
        """
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            return None, None
        _quiet_closed_loop_noise()  # before the first read: a failing one reports from other threads
        failed = []
        for step in steps:
            try:
                restored = self.restore_step(self.latest, template, step)
            except _ShapeMismatch:
                self.close()
                raise
            except Exception as e:  # a corrupt or partial step: fall back to the one before
                failed.append((step, e))
                log.warning("checkpoint step %d in %s does not restore (%s); trying the previous one",
                            step, self.latest.directory, _short(e))
                # A failed restore can leave the manager in a state that fails the next step too (an empty
                # step folder made it expect several items: every older step then failed as well).
                self.latest.close()
                self.latest = _manager(self.root / "latest", self._keep, best=False)
                continue
            for bad, _ in failed:
                self._quarantine(self.latest, bad)
            return restored, step
        step, e = failed[0]
        self.close()
        raise CheckpointError(
            f"no checkpoint in {self.latest.directory} restores (steps {', '.join(str(s) for s, _ in failed)}; "
            f"newest: {_short(e)}). If the model or its config changed, use a new --workdir; to start "
            f"this run over, delete {self.root}")

    def restore_best(self, template: Any) -> tuple[Any, int] | tuple[None, None]:
        step = self.best.best_step()
        if step is None:
            return None, None
        try:
            return self.restore_step(self.best, template, step), step
        except Exception as e:
            log.warning("best checkpoint step %d in %s does not restore (%s)", step, self.best.directory,
                        _short(e))
            return None, None

    @staticmethod
    def restore_step(mngr: ocp.CheckpointManager, template: Any, step: int):
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        item = Path(str(mngr.directory)) / str(step) / "default"
        if not (item / "_METADATA").is_file():  # checked first: orbax logs its own warnings for these
            raise CheckpointError(f"the step folder holds no saved state ({step}/default/_METADATA is missing)")
        with settled_event_loops():
            restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        # orbax restores the saved shapes even when the template asks for others: a changed model
        # (resumed with --allow_config_change) must not pass for a checkpoint of this one.
        want = jax.tree_util.tree_flatten_with_path(abstract)[0]
        got = jax.tree_util.tree_leaves(restored)
        for (path, a), b in zip(want, got):
            if tuple(a.shape) != tuple(b.shape):
                raise _ShapeMismatch(
                    f"checkpoint step {step} in {mngr.directory} holds {jax.tree_util.keystr(path)} of shape "
                    f"{tuple(b.shape)} but this config's model needs {tuple(a.shape)}: the model changed since "
                    "it was written; use a new --workdir")
        return restored

    def _quarantine(self, mngr: ocp.CheckpointManager, step: int) -> None:
        """Moves a step that does not restore out of orbax's view, into checkpoints/corrupt/."""
        src = Path(str(mngr.directory)) / str(step)
        dst = self.root / "corrupt" / f"{src.parent.name}_{step}_{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            log.warning("moved the unrestorable checkpoint step %d to %s", step, dst)
        except OSError as e:
            log.warning("could not move the unrestorable checkpoint step %d aside (%s)", step, _short(e))
        with _without_orbax_metadata_warnings():
            mngr.reload()

    def close(self) -> None:
        for mngr in (getattr(self, "latest", None), getattr(self, "best", None)):
            if mngr is not None:
                try:
                    mngr.close()
                except Exception:  # closing must never hide the error that led here
                    pass


class _SettlingEventLoop(asyncio.SelectorEventLoop):
    """An event loop that leaves no task behind: every task's exception is retrieved when the task ends,
    and ``close()`` first cancels the tasks still pending and waits for them (as ``asyncio.run`` does).

    Orbax runs a restore on a loop of its own (``asyncio.new_event_loop()``, then ``run_until_complete`` and
    ``close``) and does not cancel the loop's other tasks when one read fails: with a corrupt step, the
    read of one array raises while the reads of the others are still in flight. Those tasks ended later
    with exceptions nobody retrieved, and whenever the garbage collector got to them asyncio printed
    "Task exception was never retrieved" and a 40-line tensorstore traceback, after the recovery had already
    been reported in one line (CI, 2026-12: one run in four). Here each task's exception is retrieved by a
    done-callback (and logged at debug level), and no task outlives the loop, so nothing is left for the
    garbage collector to report, whenever it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.set_task_factory(_settled_task)

    def close(self) -> None:
        if not self.is_closed() and not self.is_running():
            pending = [t for t in asyncio.all_tasks(self) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                try:
                    self.run_until_complete(asyncio.wait(pending, timeout=10.0))
                except Exception as e:  # noqa: BLE001 - closing must never hide the restore's own error
                    log.debug("cancelling the pending checkpoint reads failed: %s", _short(e))
        super().close()


def _settled_task(loop: asyncio.AbstractEventLoop, coro, **kwargs) -> asyncio.Task:
    task = asyncio.Task(coro, loop=loop, **kwargs)
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a checkpoint read task failed: %s", _short(task.exception()))


class _SettlingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _SettlingEventLoop()


@contextlib.contextmanager
def settled_event_loops():
    """Within the block, event loops created by ``asyncio.new_event_loop()`` (orbax's, for one restore) are
    ``_SettlingEventLoop``s; outside it, asyncio's default policy is back. A read task that still escapes
    (made on another loop) is silenced when collected, by ``_quiet_unretrieved_read_errors``."""
    _quiet_unretrieved_read_errors()
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_SettlingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def _quiet_closed_loop_noise() -> None:
    """After a failed restore, reads still in flight in tensorstore complete on orbax's already-closed
    asyncio loop; Python reports each as an unraisable ``RuntimeError('Event loop is closed')`` with a
    traceback on stderr. They are harmless (the failure was already reported as one warning line), so
    this hook drops exactly those and passes everything else on."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxvae_quiet", False):
        return

    def hook(unraisable):
        frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
        if (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
                and any("asyncio" in f.filename for f in frames)):
            return
        previous(unraisable)

    hook._jaxvae_quiet = True
    sys.unraisablehook = hook


class _UnretrievedReadErrorFilter(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" when the exception is a tensorstore read of a
    checkpoint (its message names a ``tensorstore_spec``), and passes every other record on."""

    _jaxvae_quiet = True

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (str(record.msg).startswith("Task exception was never retrieved") and exc is not None
                    and "tensorstore_spec" in str(exc))


def _quiet_unretrieved_read_errors() -> None:
    """A failed restore can leave a read task on a loop that ``settled_event_loops`` did not make (CI,
    2026-12-06: a deleted array file, the task made by ``asyncio.ensure_future`` on another loop). When the
    garbage collector reaches it, asyncio logs "Task exception was never retrieved" and a 40-line
    tensorstore traceback, after the recovery was reported in one line. This filter on the ``asyncio``
    logger drops exactly those records, whenever the collector runs; asyncio's other messages pass."""
    logger = logging.getLogger("asyncio")
    if not any(getattr(f, "_jaxvae_quiet", False) for f in logger.filters):
        logger.addFilter(_UnretrievedReadErrorFilter())


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"
