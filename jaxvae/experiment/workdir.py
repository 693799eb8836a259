"""A run's workdir and the files that say where it stands: the config fingerprint (config.json, which a
resumed run must share), the lock (one writer per workdir, ``locks``), status.json, progress.json (time and
examples accumulated over resumed segments) and atomic JSON writes. results.json is written here too
(``write_json``); what goes into it is ``loop`` and ``evaluations``' business."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import jax
import ml_collections

from jaxvae.experiment import locks
from jaxvae.experiment.protocol import RunError

def write_json(path: Path, obj) -> None:
    """Atomic write: a crash never leaves a half-written JSON file. Only process 0 writes."""
    if jax.process_index() != 0:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def write_status(workdir: Path, status: str, step: int, message: str = "") -> None:
    """status.json: {"status": running | preempted | failed | finished, "step", "message"}."""
    write_json(workdir / "status.json", {"status": status, "step": int(step), "message": message})


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


def config_fingerprint(config: ml_collections.ConfigDict) -> dict:
    """The parts of the config a resumed run must share with the run it resumes."""
    c = config.to_dict()
    return {k: c[k] for k in ("seed", "imports", "data", "model", "objective", "train")}


def with_defaults(saved: dict) -> dict:
    """A saved fingerprint with fields added since it was written filled in with their defaults, and fields
    since moved in their new place (``configs.upgrade_config_dict``), so that a run written by an older
    jaxvae still resumes."""
    from jaxvae.experiment.configs import base_config, upgrade_config_dict

    def merge(default, given):
        if isinstance(default, dict) and isinstance(given, dict):
            return {k: merge(default.get(k), given[k]) if k in default else given[k] for k in given} | {
                k: v for k, v in default.items() if k not in given}
        return given

    return merge(json.loads(json.dumps(config_fingerprint(base_config()))), upgrade_config_dict(saved))


def prepare_workdir(config: ml_collections.ConfigDict, workdir: Path, allow_config_change: bool) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"workdir {workdir} is not writable ({e.strerror}); choose another --workdir") from None
    saved = workdir / "config.json"
    fingerprint = config_fingerprint(config)
    if saved.exists() and not allow_config_change:
        old = with_defaults(json.loads(saved.read_text()))
        if old != json.loads(json.dumps(fingerprint)):
            diff = sorted(diff_keys(old, json.loads(json.dumps(fingerprint))))
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


def diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


def mark_interrupted(workdir: Path) -> None:
    """status.json of a run interrupted outside a dispatch: "preempted" (when it was "running", or when the
    signal came before the run wrote one)."""
    try:
        path = workdir / "status.json"
        old = json.loads(path.read_text()) if path.exists() else {"status": "running", "step": 0}
        if old.get("status") == "running" and workdir.is_dir():
            write_status(workdir, "preempted", old.get("step", 0),
                    "interrupted outside a training dispatch; run the same command again to resume")
    except (OSError, ValueError):
        pass



def mark_failed(workdir: Path, e: BaseException) -> None:
    """status.json says "failed" (keeping its step) when the error came outside the training loop."""
    try:
        old = json.loads((workdir / "status.json").read_text())
        if old.get("status") == "running":
            write_status(workdir, "failed", old.get("step", 0), f"{type(e).__name__}: {e}")
    except (OSError, ValueError):
        pass
