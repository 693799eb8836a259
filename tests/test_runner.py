"""End-to-end tests of ``python -m jaxvae.main``: real (tiny) runs in subprocesses.

Every run shares one persistent JAX compilation cache (the ``run_env`` fixture, tests/conftest.py), so
only the first run of each shape compiles; the run helpers and argument lists are in tests/runhelpers.py.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
from runhelpers import (NO_IMAGES, RESUME, SMALL, assert_trees_equal, check_ok, load_checkpoint, run_main,
                        start_main, status, step_dirs, wait_for)

IWAE_MNIST = "experiments/iwae_mnist.py"


# -- helpers ----------------------------------------------------------------------------------------
def results(workdir) -> dict:
    return json.loads((Path(workdir) / "results.json").read_text())


def train_records(workdir) -> dict[int, dict]:
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] == "train":
            out[r["step"]] = {k: v for k, v in r.items() if k != "examples_per_s"}
    return out


# -- a short quickstart run: results, checkpoints, metrics, TensorBoard, pictures, overrides ----------
@pytest.fixture(scope="module")
def quickstart_run(run_env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart") / "run"
    p = run_main(run_env, workdir, *SMALL, "--config.train.num_epochs=2", "--config.seed=3",
                 "--config.train.eval_every_epochs=1", "--config.name=overridden", "--config.eval.images=True")
    return workdir, p


def test_quickstart_results_in_order(quickstart_run):
    workdir, p = quickstart_run
    check_ok(p)
    r = results(workdir)
    t = r["test"]
    assert t["num_examples"] == 100
    bounds = [t["elbo"], t["iwae"]["1"], t["iwae"]["5"], t["iwae"]["50"]]
    assert all(math.isfinite(b) for b in bounds), bounds
    assert all(b < 0 for b in bounds), bounds  # log-probabilities of binarized 8x8 digits
    # E[IWAE_K] increases with K. Each is a mean over 100 examples of a Monte Carlo estimate whose
    # per-example spread is a few nats, so the standard error of each mean is ~0.3 nats: 1 nat of slack.
    assert t["iwae"]["50"] >= t["iwae"]["5"] - 1.0
    assert t["iwae"]["5"] >= t["iwae"]["1"] - 1.0
    assert t["iwae"]["50"] >= t["elbo"] - 1.0
    assert t["iwae"]["50"] > t["elbo"]  # the gap is ~1 nat after training; noise does not close it
    assert t["nll"] == pytest.approx(-t["iwae"]["50"]) and t["nll_k"] == 50
    assert r["train"]["steps"] == 54 and r["train"]["skipped_updates"] == 0
    assert r["valid"] and math.isfinite(r["valid"]["iwae"]["5"])
    assert status(workdir)["status"] == "finished"
    assert "test IWAE_50" in p.stdout  # the final table


def test_quickstart_writes_checkpoints_metrics_tensorboard(quickstart_run):
    workdir, p = quickstart_run
    check_ok(p)
    assert step_dirs(workdir, "latest") == [27, 54]
    assert len(step_dirs(workdir, "best")) == 1
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "valid"}
    assert [r["step"] for r in records if r["split"] == "valid"] == [27, 54]
    assert all(math.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((workdir / "config.json").read_text())["seed"] == 3


def test_quickstart_writes_pictures(quickstart_run):
    workdir, p = quickstart_run
    if "jaxvae.experiment.pictures" in p.stderr and ("ModuleNotFoundError" in p.stderr or "ImportError" in p.stderr):
        pytest.skip("jaxvae/pictures.py is not available yet (eval.images=True needs it)")
    check_ok(p)
    pictures = results(workdir)["pictures"]
    assert "samples.png" in pictures
    for name in pictures:
        data = (workdir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name


def test_command_line_overrides_take_effect(quickstart_run):
    workdir, p = quickstart_run
    check_ok(p)
    c = results(workdir)["config"]
    assert c["seed"] == 3 and c["name"] == "overridden" and c["train"]["num_epochs"] == 2
    assert c["train"]["steps_per_dispatch"] == 2 and list(c["eval"]["ks"]) == [1, 5, 50]
    assert c["eval"]["max_examples"] == 100 and c["eval"]["valid_k"] == 5
    assert c["objective"]["name"] == "iwae" and c["objective"]["k"] == 5  # from quickstart.py
    assert c["train"]["learning_rate"] == 3e-3  # quickstart.py's value, not the base config's
    r = results(workdir)
    assert r["name"] == "overridden" and r["summary"]["seed"] == 3 and r["summary"]["dataset"] == "digits"


# -- a tiny binarized MNIST from files the test writes ------------------------------------------------
def write_binarized_mnist_npz(folder: Path, n=(300, 100, 100), seed=0) -> Path:
    """Random-but-structured binary 28x28 images: 6 random prototypes, each pixel flipped with p=0.05."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((6, 784)) < 0.3
    arrays = {}
    for split, size in zip(("train", "valid", "test"), n):
        base = prototypes[rng.integers(0, 6, size)]
        arrays[split] = (base ^ (rng.random((size, 784)) < 0.05)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "binarized_mnist.npz", **arrays)
    return folder


def test_tiny_binarized_mnist_from_files(run_env, tmp_path):
    manual = write_binarized_mnist_npz(tmp_path / "manual")
    workdir = tmp_path / "run"
    # iwae schedule with budget 0.001: 3^i * 0.001 passes of 15 steps (batch 20), at least 1 step each:
    # 1+1+1+1+1+4+11+33 = 53 steps.
    p = run_main(run_env, workdir, f"--config.data.manual_dir={manual}", "--config.data.download=False",
                 f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.train.budget=0.001",
                 "--config.objective.k=5", "--config.eval.ks=(1,5)", "--config.eval.valid_k=5",
                 "--config.eval.images=False", "--config.train.eval_every_epochs=0",
                 "--config.model.encoder_hidden=(64,)",
                 "--config.model.decoder_hidden=(64,)", "--config.model.latent_dim=8", config=IWAE_MNIST)
    check_ok(p)
    r = results(workdir)
    assert r["summary"]["dataset"] == "binarized_mnist" and r["config"]["train"]["schedule"] == "iwae"
    t = r["test"]
    assert t["num_examples"] == 100
    assert all(math.isfinite(v) for v in (t["elbo"], t["iwae"]["1"], t["iwae"]["5"]))
    assert t["iwae"]["5"] >= t["elbo"] - 2.0  # 784 binary pixels: a few nats of Monte Carlo noise
    # better than coin flips (784 log 2 = 543 nats): the model learned the pixel statistics at least
    assert t["elbo"] > -784 * math.log(2)
    assert r["train"]["steps"] == 53


# -- resume equals uninterrupted (the uninterrupted RESUME run: the resume_reference fixture) ---------
def test_resume_after_sigterm_equals_uninterrupted(run_env, resume_reference, tmp_path):
    ref = resume_reference
    work = tmp_path / "interrupted"
    # Slow checkpoint commits (a test hook, see jaxvae/checkpoints.py) keep the run busy long enough
    # for the signal to land mid-training.
    proc, out, err = start_main(run_env, work, *RESUME, slow_save=1)
    wait_for(lambda: status(work).get("step", 0) > 0, proc, "the first dispatch")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3, err.read_text()
    stderr = err.read_text()
    assert "Traceback" not in stderr and "preempted" in stderr
    st = status(work)
    assert st["status"] == "preempted" and 0 < st["step"] < 81
    assert step_dirs(work)[-1] == st["step"]  # the checkpoint saved at the dispatch boundary

    p = run_main(run_env, work, *RESUME)
    check_ok(p)
    assert f"resuming from checkpoint at step {st['step']}" in p.stdout
    a, b = results(ref), results(work)
    assert a["config"] == b["config"]
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert a["train"]["steps"] == b["train"]["steps"] == 81
    assert_trees_equal(load_checkpoint(ref, 81), load_checkpoint(work, 81))
    assert train_records(ref) == train_records(work)  # the curves too, resumed part included


# -- config changes, NaN stop and skip ----------------------------------------------------------------
def test_config_change_refused_nan_stop_and_skip(run_env, tmp_path):
    work = tmp_path / "run"
    base = [*SMALL, "--config.train.num_epochs=1", NO_IMAGES]
    check_ok(run_main(run_env, work, *base))
    assert step_dirs(work) == [27]

    # A different config is refused before any compute (nothing in the workdir changes).
    nan = [*SMALL, "--config.train.num_epochs=2", "--config.train.learning_rate=1e30", NO_IMAGES]
    p = run_main(run_env, work, *nan)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "different config" in p.stderr and "train.learning_rate" in p.stderr
    assert "--allow_config_change" in p.stderr
    assert status(work)["status"] == "finished" and step_dirs(work) == [27]

    # Allowed: it resumes at step 27; the huge learning rate makes step 28's loss non-finite.
    p = run_main(run_env, work, *nan, "--allow_config_change")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "resuming from checkpoint at step 27" in p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert "non-finite loss at step 28" in errors[0]
    assert "last good checkpoint is step 27" in errors[0]
    st = status(work)
    assert st["status"] == "failed" and "step 28" in st["message"]
    assert step_dirs(work) == [27]  # nothing non-finite was saved

    # With nan_policy=skip the same run finishes, counting the skipped updates.
    p = run_main(run_env, work, *nan, "--config.train.nan_policy=skip", "--allow_config_change",
                 "--config.train.steps_per_dispatch=0")  # one 27-step dispatch: one program to compile
    check_ok(p)
    r = results(work)
    assert r["train"]["skipped_updates"] > 0 and r["train"]["steps"] == 54
    assert r["config"]["train"]["nan_policy"] == "skip" and r["config"]["train"]["steps_per_dispatch"] == 0
