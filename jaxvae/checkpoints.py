"""Checkpoints with orbax: the last N states (for resume) and the best by validation bound.

Layout: ``<workdir>/checkpoints/latest/<step>`` and ``<workdir>/checkpoints/best/<step>``. Orbax
writes each step to a temporary folder and renames it when complete, so a crash mid-save never leaves
a half-written step that looks finished; a step that still fails to restore is skipped with a warning
in favour of the previous one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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
    return ocp.CheckpointManager(path.absolute(), options=options)


class Checkpoints:
    """The run's two checkpoint managers. ``state`` is any pytree of arrays (the TrainState)."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        root = Path(workdir) / "checkpoints"
        self.latest = _manager(root / "latest", max(1, keep), best=False)
        self.best = _manager(root / "best", 1, best=True)

    def save(self, step: int, state: Any, valid_bound: float | None = None) -> None:
        state = jax.device_get(state)
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)
        self.latest.wait_until_finished()
        if valid_bound is not None:
            self.best.save(step, args=ocp.args.StandardSave(state), metrics={"valid_bound": valid_bound},
                           force=True)
            self.best.wait_until_finished()

    def restore_latest(self, template: Any) -> tuple[Any, int] | tuple[None, None]:
        """The newest state that restores; (None, None) when there is none."""
        return self._restore(self.latest, template, sorted(self.latest.all_steps(), reverse=True))

    def restore_best(self, template: Any) -> tuple[Any, int] | tuple[None, None]:
        step = self.best.best_step()
        return self._restore(self.best, template, [step] if step is not None else [])

    @staticmethod
    def _restore(mngr: ocp.CheckpointManager, template: Any, steps: list[int]):
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        for step in steps:
            try:
                return mngr.restore(step, args=ocp.args.StandardRestore(abstract)), step
            except Exception as e:  # a corrupt or partial step: fall back to the one before
                log.warning("checkpoint step %d in %s does not restore (%s: %s); trying the previous one",
                            step, mngr.directory, type(e).__name__, str(e).splitlines()[0][:200])
        return None, None

    def close(self) -> None:
        self.latest.close()
        self.best.close()
