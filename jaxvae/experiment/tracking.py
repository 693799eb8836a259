"""Experiment tracking beside metrics.jsonl and TensorBoard: MLflow and Weights & Biases (``config.tracking``).

A tracker receives what ``MetricWriter`` receives (the train and valid streams, step by step), then the
numbers of results.json as final metrics and results.json plus the PNG pictures as files. The run id of
each tracker is kept in <workdir>/tracking.json, so a resumed run continues the same MLflow / W&B run.
Only the process whose ``MetricWriter`` is enabled (process 0 of a multi-host run) opens trackers.
A tracker that fails while training warns once and is dropped: metrics.jsonl stays the full record.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from jaxvae.experiment.configs import flatten

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # config flag -> the module it needs (the extra's name)
WANDB_MODES = ("offline", "online", "disabled")
STATE_FILE = "tracking.json"
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"  # MLflow >= 3.7 refuses file stores unless this is "true"


class TrackingError(ValueError):
    """Tracking cannot start (package missing, store unreachable); the message says what to do."""


def missing_package(flag: str) -> str:
    return (f"tracking.{flag}=True needs the {EXTRAS[flag]} package, which is not installed: "
            f"pip install 'jaxvae[{flag}]' (or set tracking.{flag}=False)")


def config_problems(config) -> list[str]:
    """One line per problem with ``config.tracking`` beyond types and choices (``validate_config`` checks
    those): a tracker turned on whose package is missing, an empty W&B project."""
    t = config.get("tracking")
    if t is None:
        return []
    problems = [missing_package(flag) for flag, module in EXTRAS.items()
                if t.get(flag) is True and importlib.util.find_spec(module) is None]
    if t.get("wandb") is True and not t.get("wandb_project"):
        problems.append("tracking.wandb_project is empty; name the W&B project (default 'jaxvae')")
    return problems


def open_trackers(config, workdir: str | Path, log=print) -> list:
    """The trackers ``config.tracking`` turns on, each opened (or resumed) for ``workdir``; [] when none."""
    t = config.get("tracking") if config is not None else None
    if t is None or not (t.get("mlflow") or t.get("wandb")):
        return []
    problems = config_problems(config)
    if t.get("wandb") and t.get("wandb_mode") not in WANDB_MODES:
        problems.append(f"tracking.wandb_mode={t.get('wandb_mode')!r} is not one of {', '.join(WANDB_MODES)}")
    if problems:
        raise TrackingError("; ".join(problems))
    workdir = Path(workdir).resolve()
    trackers = []
    try:
        if t.mlflow:
            trackers.append(MLflowTracker(config, workdir, log))
        if t.wandb:
            trackers.append(WandbTracker(config, workdir, log))
    except BaseException:
        for tracker in trackers:
            tracker.close("failed")
        raise
    return trackers


# -- what is logged -----------------------------------------------------------------------------------
def flat_config(config) -> dict:
    """The config as {dotted.path: value}, sorted; sequences as lists."""
    flat = sorted(flatten(config.to_dict()).items())
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in flat}


def flat_params(config) -> dict[str, str]:
    """``flat_config`` as text, as MLflow stores parameters (sequences as tuples: ``(1, 5, 50)``)."""
    return {k: str(tuple(v)) if isinstance(v, list) else str(v) for k, v in flat_config(config).items()}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def final_metrics(results: dict) -> dict[str, float]:
    """The numbers of results.json: ``test/<name>`` (``test/iwae_<K>`` per bound: ELBO, IWAE_K, NLL,
    active units, ELBO surgery, ...) and ``run/<name>`` (wall time, examples/s, skipped updates, ...)."""
    out = {}
    for k, v in (results.get("test") or {}).items():
        if isinstance(v, dict):
            out.update({f"test/{k}_{kk}": float(vv) for kk, vv in v.items() if _number(vv)})
        elif _number(v):
            out[f"test/{k}"] = float(v)
    for k, v in (results.get("train") or {}).items():
        if _number(v):
            out[f"run/{k}"] = float(v)
    if _number(results.get("eval_wall_time_s")):
        out["run/eval_wall_time_s"] = float(results["eval_wall_time_s"])
    return out


def result_files(results: dict, workdir: Path) -> list[Path]:
    """results.json and the pictures it lists, those that exist."""
    names = ["results.json", *results.get("pictures", [])]
    return [workdir / n for n in names if (workdir / n).is_file()]


def _final_step(results: dict) -> int:
    return int((results.get("train") or {}).get("steps") or 0)


# -- run ids across resumes ---------------------------------------------------------------------------
def _load_state(workdir: Path) -> dict:
    try:
        state = json.loads((workdir / STATE_FILE).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(workdir: Path, key: str, value: dict) -> None:
    state = _load_state(workdir)
    state[key] = value
    tmp = workdir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, workdir / STATE_FILE)


class _Tracker:
    name = "tracker"

    def __init__(self):
        self._broken = False

    def _guard(self, what: str, fn, *args) -> None:
        """Runs fn; a failure warns once and turns this tracker off (a tracking outage must not end a run)."""
        if self._broken:
            return
        try:
            fn(*args)
        except Exception as e:
            self._broken = True
            print(f"warning: {self.name} logging failed while {what} ({type(e).__name__}: {e}); "
                  f"continuing without {self.name} (metrics.jsonl has every record)", file=sys.stderr)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._guard(f"logging step {step}", self._log_metrics, step, metrics)

    def log_results(self, results: dict, workdir: Path) -> None:
        self._guard("logging the results", self._log_results, results, workdir)

    def close(self, status: str) -> None:
        """``status``: finished | failed | preempted (status.json's word)."""
        self._guard("closing the run", self._close, status)


# -- MLflow ---------------------------------------------------------------------------------------------
def mlflow_tracking_uri(config, workdir: Path) -> str:
    """tracking.mlflow_tracking_uri; "" = $MLFLOW_TRACKING_URI, else the file store <workdir>/../mlruns
    (one store per sweep). A plain path is a file store."""
    uri = config.tracking.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return (Path(workdir).resolve().parent / "mlruns").as_uri()
    if ":" not in uri and uri != "databricks":  # no scheme: a path
        return Path(uri).expanduser().resolve().as_uri()
    return uri


class MLflowTracker(_Tracker):
    """One MLflow run per workdir: params = the flattened config, metrics per step, final metrics, and
    results.json and the pictures as artifacts. Uses ``MlflowClient`` (no global active run), so the
    members of a vectorized group each log to their own run from one process."""

    name = "MLflow"
    BATCH = 100  # params per log_batch call (MLflow's limit)

    def __init__(self, config, workdir: Path, log=print):
        super().__init__()
        self.uri = mlflow_tracking_uri(config, workdir)
        if self.uri.startswith("file:"):  # the documented opt-in of MLflow >= 3.7 for file stores
            os.environ.setdefault(FILE_STORE_ENV, "true")
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.experiment = config.tracking.mlflow_experiment or config.name
        try:
            self.client = MlflowClient(self.uri)
            experiment_id = self._experiment_id()
            self.run_id, self.logged = self._resume(workdir)
            params = flat_params(config)
            if self.run_id is None:
                run = self.client.create_run(experiment_id, run_name=workdir.name,
                                             tags={"workdir": str(workdir)})
                self.run_id, self.logged = run.info.run_id, {}
                self._log_params(params)
                log(f"MLflow: run {self.run_id} in experiment {self.experiment!r} at {self.uri}")
            else:
                self.client.update_run(self.run_id, status="RUNNING")
                self._log_changed_params(params)
                log(f"MLflow: resuming run {self.run_id} in experiment {self.experiment!r} at {self.uri}")
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(f"MLflow tracking at {self.uri} failed to start ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); fix "
                                "tracking.mlflow_tracking_uri or set tracking.mlflow=False") from None
        _save_state(workdir, "mlflow", {"run_id": self.run_id, "tracking_uri": self.uri,
                                        "experiment": self.experiment})

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return self.client.create_experiment(self.experiment)
            except Exception:  # created meanwhile by a run of the same sweep
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise TrackingError(f"MLflow experiment {self.experiment!r} at {self.uri} is deleted; restore it "
                                "(mlflow experiments restore) or set tracking.mlflow_experiment")
        return exp.experiment_id

    def _resume(self, workdir: Path) -> tuple[str | None, dict[str, int]]:
        """(run id, {metric: last step logged}) of this workdir's run in this store; (None, {}) if none."""
        saved = _load_state(workdir).get("mlflow") or {}
        if not saved.get("run_id") or saved.get("tracking_uri") != self.uri:
            return None, {}
        try:
            run = self.client.get_run(saved["run_id"])
        except Exception:  # deleted from the store: start a new run
            return None, {}
        if run.info.lifecycle_stage != "active":
            return None, {}
        return run.info.run_id, {key: max(m.step for m in self.client.get_metric_history(run.info.run_id, key))
                                 for key in run.data.metrics}

    def _log_params(self, params: dict[str, str]) -> None:
        items = [self._Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), self.BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + self.BATCH])

    def _log_changed_params(self, params: dict[str, str]) -> None:
        """MLflow params cannot change; a field changed on resume (--allow_config_change) becomes the tag
        ``resumed_with.<field>``, a new field a param."""
        old = self.client.get_run(self.run_id).data.params
        self._log_params({k: v for k, v in params.items() if k not in old})
        changed = [self._RunTag(f"resumed_with.{k}", v) for k, v in params.items() if k in old and old[k] != v]
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def _log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)  # points up to self.logged[k] were logged before an interruption
        new = [self._Metric(k, v, now, step) for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if new:
            self.client.log_batch(self.run_id, metrics=new)

    def _log_results(self, results: dict, workdir: Path) -> None:
        now, step = int(time.time() * 1000), _final_step(results)
        self.client.log_batch(self.run_id, metrics=[
            self._Metric(k, v, now, step) for k, v in final_metrics(results).items()])
        for path in result_files(results, workdir):
            self.client.log_artifact(self.run_id, str(path))

    def _close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "preempted": "KILLED"}.get(
            status, "FAILED"))


# -- Weights & Biases ---------------------------------------------------------------------------------
class WandbTracker(_Tracker):
    """One W&B run per workdir (id kept in tracking.json; ``resume="allow"``): config = the flattened
    config, history per step, final metrics in the run summary, pictures as ``wandb.Image`` and
    results.json plus the PNGs as run files. Offline mode writes <wandb_dir>/wandb/offline-run-*
    (upload later with ``wandb sync``)."""

    name = "W&B"

    def __init__(self, config, workdir: Path, log=print):
        super().__init__()
        import wandb

        self._wandb = wandb
        t = config.tracking
        saved = _load_state(workdir).get("wandb") or {}
        run_id = saved["run_id"] if saved.get("project") == t.wandb_project and saved.get("run_id") else None
        run_id = run_id or uuid.uuid4().hex[:12]
        directory = Path(t.wandb_dir or workdir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=t.wandb_project, dir=str(directory), mode=t.wandb_mode, id=run_id, name=workdir.name,
                group=config.name, config=flat_config(config), resume="allow", reinit="create_new",
                settings=wandb.Settings(console="off", silent=True))
        except Exception as e:
            raise TrackingError(f"W&B tracking failed to start ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); set tracking.wandb_mode="
                                "'offline' or tracking.wandb=False") from None
        _save_state(workdir, "wandb", {"run_id": run_id, "project": t.wandb_project, "dir": str(directory)})
        log(f"W&B: run {run_id} in project {t.wandb_project!r} ({t.wandb_mode}, {directory / 'wandb'})")

    def _log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def _log_results(self, results: dict, workdir: Path) -> None:
        self.run.summary.update(final_metrics(results))
        files = result_files(results, workdir)
        pictures = {f"pictures/{p.stem}": self._wandb.Image(str(p)) for p in files if p.suffix == ".png"}
        if pictures:
            self.run.log(pictures, step=max(_final_step(results), self.run.step))
        for path in files:  # uploaded with the run (wandb sync for offline runs)
            shutil.copy2(path, Path(self.run.dir) / path.name)

    def _close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


def closing_status(workdir: Path, finished: bool) -> str:
    """finished | failed | preempted: how the run ends, from status.json when results were not logged."""
    if finished:
        return "finished"
    try:
        status = json.loads((Path(workdir) / "status.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    return status if status in ("failed", "preempted") else "failed"
