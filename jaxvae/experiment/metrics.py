"""Metric writers: one JSON object per line in ``metrics.jsonl``, TensorBoard event files, and the trackers
``config.tracking`` turns on (MLflow, W&B: jaxvae/experiment/tracking.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _plain(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _step_of(line: str) -> float:
    """The step of a JSONL record; a blank or half-written line (a run killed mid-write) counts as
    past any resume point, so it is dropped."""
    try:
        return float(json.loads(line).get("step", 0)) if line.strip() else math.inf
    except (ValueError, AttributeError):
        return math.inf


class MetricWriter:
    """Appends ``{"step", "split", ...}`` records to <workdir>/metrics.jsonl and TensorBoard scalars, and
    passes them to the MLflow / W&B trackers of ``config.tracking`` (none without a config).

    On resume, records past the resumed step (and any half-written line of a killed run) are dropped
    from the JSONL file first, so the curves of an interrupted run equal those of an uninterrupted one.
    ``log_results`` hands the trackers results.json's numbers and files; ``close`` ends their runs.
    """

    def __init__(self, workdir: str | Path, resume_step: int = 0, tensorboard: bool = True,
                 enabled: bool = True, config=None):
        self.workdir = Path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self.enabled = enabled  # False on every process but the first of a multi-host run
        self._tb = None
        self._trackers = []
        self._finished = False
        if not enabled:
            return
        from jaxvae.experiment import tracking

        self._trackers = tracking.open_trackers(config, workdir)  # TrackingError before any training
        if self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, self.path)
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), flush_secs=30)
            except Exception:  # TensorBoard output is optional; the JSONL file is the record
                self._tb = None

    def write(self, step: int, split: str, **scalars) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: _plain(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                if k not in ("epoch",):
                    self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
        if self._trackers:
            metrics = {f"{split}/{k}": float(v) for k, v in scalars.items() if k != "epoch"}
            for t in self._trackers:
                t.log_metrics(int(step), metrics)

    def log_results(self, results: dict) -> None:
        """After results.json is written: its numbers as final metrics, it and the pictures as files."""
        for t in self._trackers:
            t.log_results(results, self.workdir)
        self._finished = True

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._trackers:
            from jaxvae.experiment.tracking import closing_status

            status = closing_status(self.workdir, self._finished)
            for t in self._trackers:
                t.close(status)
            self._trackers = []
