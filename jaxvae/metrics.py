"""Metric writers: one JSON object per line in ``metrics.jsonl`` and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _plain(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


class MetricWriter:
    """Appends ``{"step", "split", ...}`` records to <workdir>/metrics.jsonl and TensorBoard scalars.

    On resume, records past the resumed step are dropped from the JSONL file first, so the curves
    of an interrupted run equal those of an uninterrupted one.
    """

    def __init__(self, workdir: str | Path, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        if self.path.exists():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), flush_secs=30)
            except Exception:  # TensorBoard output is optional; the JSONL file is the record
                self._tb = None

    def write(self, step: int, split: str, **scalars) -> None:
        record = {"step": int(step), "split": split, **{k: _plain(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                if k not in ("epoch",):
                    self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
