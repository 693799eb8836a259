"""Experiment tracking (jaxvae/experiment/tracking.py): MLflow against a real local file store, read back
through the MLflow client; W&B in offline mode when wandb is installed (skipped otherwise).

mlflow is in the ``test`` extra, so under CI (``CI`` set) a missing mlflow fails instead of skipping.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelpers import ROOT, SMALL, check_ok, run_main

from jaxvae.experiment.configs import base_config
from jaxvae.experiment.metrics import MetricWriter
from jaxvae.experiment.tracking import TrackingError, final_metrics, flat_params
from jaxvae.experiment.validation import ConfigError, flatten, validate_config


def require(module: str):
    if module == "mlflow" and os.environ.get("CI"):
        return importlib.import_module(module)  # the test extra installs it: a skip would hide that
    return pytest.importorskip(module)


def mlflow_client(uri: str):
    require("mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def tracked_config(**tracking):
    c = base_config()
    c.name = "tracking_test"
    c.tracking.update(tracking)
    return c


def run_id_of(workdir: Path, tracker: str = "mlflow") -> str:
    return json.loads((workdir / "tracking.json").read_text())[tracker]["run_id"]


FAKE_RESULTS = {"test": {"elbo": -90.5, "iwae": {"5": -89.25}, "nll": 89.25, "active_units": 7,
                         "mutual_information": None},
                "train": {"steps": 8, "wall_time_s": 1.5}, "pictures": ["samples.png"]}


def write_fake_results(workdir: Path) -> dict:
    from PIL import Image

    (workdir / "results.json").write_text(json.dumps(FAKE_RESULTS))
    Image.new("L", (4, 4), 128).save(workdir / "samples.png")
    return FAKE_RESULTS


# -- config and missing packages ------------------------------------------------------------------------
def test_tracking_fields_are_validated_and_a_missing_package_names_the_extra(monkeypatch, tmp_path):
    validate_config(tracked_config())  # both off by default: nothing needs to be installed
    with pytest.raises(ConfigError, match="tracking.wandb_mode='cloud' is not one of offline, online"):
        validate_config(tracked_config(wandb_mode="cloud"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError) as e:
        validate_config(tracked_config(mlflow=True, wandb=True))
    assert "pip install 'jaxvae[mlflow]'" in str(e.value) and "pip install 'jaxvae[wandb]'" in str(e.value)
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "split": "train"}\n')
    with pytest.raises(TrackingError, match=r"pip install 'jaxvae\[mlflow\]'"):
        MetricWriter(tmp_path, resume_step=0, tensorboard=False, config=tracked_config(mlflow=True))
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1  # refused before touching the workdir


def test_main_refuses_a_missing_tracking_package_before_any_compute(tmp_path):
    workdir = tmp_path / "run"
    code = ("import sys; sys.modules['mlflow'] = None; from jaxvae.main import run; "
            f"sys.argv = ['jaxvae.main', '--config=experiments/quickstart.py', '--workdir={workdir}', "
            "'--config.tracking.mlflow=True']; run()")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2, p.stderr
    assert "pip install 'jaxvae[mlflow]'" in p.stderr and "Traceback" not in p.stderr
    assert not workdir.exists()


def test_final_metrics_are_the_numbers_of_results_json():
    m = final_metrics({**FAKE_RESULTS, "eval_wall_time_s": 2.0})
    assert m == {"test/elbo": -90.5, "test/iwae_5": -89.25, "test/nll": 89.25, "test/active_units": 7.0,
                 "run/steps": 8.0, "run/wall_time_s": 1.5, "run/eval_wall_time_s": 2.0}


# -- MLflow: a real tiny run, then a resumed writer --------------------------------------------------------
def test_mlflow_logs_a_real_run_to_the_default_file_store(run_env, tmp_path):
    require("mlflow")
    workdir = tmp_path / "sweep" / "one"
    env = {k: v for k, v in run_env.items() if k != "MLFLOW_TRACKING_URI"}
    p = run_main(env, workdir, *SMALL, "--config.train.num_epochs=1", "--config.eval.images=True",
                 "--config.tracking.mlflow=True")
    check_ok(p)
    check_logged_run(workdir, (tmp_path / "sweep" / "mlruns").as_uri(), tmp_path)  # default: <workdir>/../mlruns


def check_logged_run(workdir: Path, store: str, tmp_path: Path) -> None:
    results = json.loads((workdir / "results.json").read_text())
    client = mlflow_client(store)
    run = client.get_run(run_id_of(workdir))
    assert run.info.status == "FINISHED" and run.info.run_name == "one"
    assert client.get_experiment(run.info.experiment_id).name == "quickstart"  # config.name
    assert run.data.tags["workdir"] == str(workdir.resolve())

    params = run.data.params
    assert len(params) == len(flatten(results["config"]))
    assert params["objective.k"] == "5" and params["train.num_epochs"] == "1"
    assert params["eval.ks"] == "(1, 5, 50)" and params["tracking.mlflow"] == "True"

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    valid = [(r["step"], r["iwae_5"]) for r in records if r["split"] == "valid"]
    assert [s for s, _ in train] == [*range(2, 27, 2), 27] and [s for s, _ in valid] == [27]
    assert history(client, run.info.run_id, "train/loss") == train  # float64 in both: exactly equal
    assert history(client, run.info.run_id, "valid/iwae_5") == valid

    t, m = results["test"], run.data.metrics
    assert m["test/elbo"] == t["elbo"] and m["test/nll"] == t["nll"] and m["test/kl"] == t["kl"]
    assert [m[f"test/iwae_{k}"] for k in (1, 5, 50)] == [t["iwae"][k] for k in ("1", "5", "50")]
    assert m["test/active_units"] == t["active_units"] and m["run/steps"] == 27
    assert m["run/examples_per_s"] == results["train"]["examples_per_s"]
    assert history(client, run.info.run_id, "test/elbo") == [(27, t["elbo"])]

    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"results.json", *results["pictures"]} and "samples.png" in artifacts
    local = Path(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path)))
    assert json.loads(local.read_text()) == results


def test_mlflow_resume_continues_the_same_run(tmp_path):
    require("mlflow")
    store = (tmp_path / "store").as_uri()
    workdir = tmp_path / "runs" / "a"
    workdir.mkdir(parents=True)
    config = tracked_config(mlflow=True, mlflow_tracking_uri=str(tmp_path / "store"), mlflow_experiment="exp")
    w = MetricWriter(workdir, resume_step=0, tensorboard=False, config=config)
    for step in (2, 4, 6):
        w.write(step, "train", epoch=0.1, loss=10.0 - step)
    w.write(4, "valid", iwae_5=-7.0)  # killed before the validation of step 6
    (workdir / "status.json").write_text('{"status": "preempted", "step": 6}')
    w.close()
    client = mlflow_client(store)
    first = run_id_of(workdir)
    assert client.get_run(first).info.status == "KILLED"

    # resumed from the checkpoint at step 4, with a config changed by --allow_config_change
    config.train.num_epochs = 20
    w = MetricWriter(workdir, resume_step=4, tensorboard=False, config=config)
    assert client.get_run(first).info.status == "RUNNING"
    for step in (6, 8):
        w.write(step, "train", epoch=0.2, loss=10.0 - step)
        w.write(step, "valid", iwae_5=-step - 1.0)
    w.log_results(write_fake_results(workdir))
    w.close()

    assert run_id_of(workdir) == first and len(client.search_runs([client.get_run(first).info.experiment_id])) == 1
    run = client.get_run(first)
    assert run.info.status == "FINISHED"
    assert history(client, first, "train/loss") == [(2, 8.0), (4, 6.0), (6, 4.0), (8, 2.0)]  # step 6 once
    assert history(client, first, "valid/iwae_5") == [(4, -7.0), (6, -7.0), (8, -9.0)]
    assert "train/epoch" not in run.data.metrics
    assert run.data.params["train.num_epochs"] == "10" and run.data.tags["resumed_with.train.num_epochs"] == "20"
    assert run.data.metrics["test/iwae_5"] == -89.25 and history(client, first, "test/elbo") == [(8, -90.5)]
    assert {f.path for f in client.list_artifacts(first)} == {"results.json", "samples.png"}
    assert flat_params(config)["train.num_epochs"] == "20"

    # another store: the saved run id means nothing there, so a new run starts
    config.tracking.mlflow_tracking_uri = str(tmp_path / "other")
    MetricWriter(workdir, resume_step=8, tensorboard=False, config=config).close()
    assert run_id_of(workdir) != first


def test_only_the_enabled_writer_logs(tmp_path):
    """Processes other than 0 of a multi-host run (enabled=False) open no tracker and write nothing."""
    config = tracked_config(mlflow=True, mlflow_tracking_uri=str(tmp_path / "store"))
    w = MetricWriter(tmp_path / "wd", enabled=False, config=config)
    w.write(1, "train", loss=1.0)
    w.log_results(FAKE_RESULTS)
    w.close()
    assert not (tmp_path / "store").exists() and not (tmp_path / "wd").exists()


# -- Weights & Biases, offline ------------------------------------------------------------------------------
def wandb_records(run_file: Path):
    """The protobuf records of an offline run's ``.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if len(chunk) < length:  # still being written
            return
        if kind == 0:
            continue
        buf = chunk if kind == 2 else buf + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def finished_records(run_file: Path, timeout: float = 30.0) -> list:
    """The records once the run's exit record is on disk (W&B's service writes the file after finish())."""
    end = time.time() + timeout
    while time.time() < end:
        records = list(wandb_records(run_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        time.sleep(0.1)
    pytest.fail(f"{run_file} has no exit record {timeout} s after finish()")


def test_wandb_offline_logs_history_summary_and_files(tmp_path, monkeypatch):
    require("wandb")
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    workdir = tmp_path / "b"
    workdir.mkdir()
    config = tracked_config(wandb=True, wandb_mode="offline")
    w = MetricWriter(workdir, tensorboard=False, config=config)
    for step in (2, 4):
        w.write(step, "train", epoch=0.1, loss=10.0 - step)
    w.write(4, "valid", iwae_5=-7.5)
    w.log_results(write_fake_results(workdir))
    w.close()

    run_id = run_id_of(workdir, "wandb")
    [run_dir] = (workdir / "wandb").glob(f"offline-run-*-{run_id}")
    records = finished_records(run_dir / f"run-{run_id}.wandb")
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config_items = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert run.project == "jaxvae" and config_items["objective.k"] == 1 and config_items["tracking.wandb"] is True
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    assert [(row["_step"], row["train/loss"]) for row in rows if "train/loss" in row] == [(2, 8.0), (4, 6.0)]
    assert [row["valid/iwae_5"] for row in rows if "valid/iwae_5" in row] == [-7.5]
    assert [(row["_step"], row["pictures/samples/_type"]) for row in rows if "pictures/samples/_type" in row] == [
        (8, "image-file")]  # at results.json's final step
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
    assert summary["test/elbo"] == -90.5 and summary["test/iwae_5"] == -89.25
    assert json.loads((run_dir / "files" / "results.json").read_text()) == FAKE_RESULTS
    assert (run_dir / "files" / "samples.png").read_bytes() == (workdir / "samples.png").read_bytes()

    MetricWriter(workdir, resume_step=4, tensorboard=False, config=config).close()  # resume: same run id
    assert run_id_of(workdir, "wandb") == run_id
    assert len(list((workdir / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1


def test_report_does_not_take_tracking_stores_for_runs(tmp_path):
    """mlruns/ and wandb/ hold copies of results.json; the sweep report must not list them as runs."""
    from jaxvae.sweeps.report import load_runs

    for folder in ("k=5", "mlruns/1/abc/artifacts", "k=5/wandb/offline-run-1-x/files"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "results.json").write_text(json.dumps({"status": "finished", **FAKE_RESULTS}))
    assert [r.name for r in load_runs(str(tmp_path))] == ["k=5"]
