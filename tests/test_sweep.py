"""Sweeps: declaring (product/zipped/chain), naming, --list/--dry-run, local launches through launch.sh
(parallel, skip finished, failures, SIGTERM), Slurm array scripts and TPU VM commands.

Launch tests use a fake runner module (written into tmp_path, selected with JAXVAE_RUN_MODULE) that
parses the same flags as jaxvae.main (ml_collections config_flags) and writes status.json/results.json.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxvae import sweeps as sweep
from jaxvae.sweeps import chain, product, run_names, zipped

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch.sh"

FAKE_RUNNER = '''
"""Fake jaxvae.main: same flags; writes status.json, metrics.jsonl, results.json; fails when K == 13;
with train.num_epochs == 999 it waits for SIGTERM (then status preempted, exit 3)."""
import json, os, signal, sys, time
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config")
flags.DEFINE_string("workdir", None, "run folder")


def _status(wd, status, step, message=""):
    with open(os.path.join(wd, "status.json"), "w") as f:
        json.dump({"status": status, "step": step, "message": message}, f)


def main(argv):
    c = _CONFIG.value
    wd = flags.FLAGS.workdir
    os.makedirs(wd, exist_ok=True)
    start = time.time()
    with open(os.path.join(wd, "launches.txt"), "a") as f:
        f.write(json.dumps({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else None}) + "\\n")
    _status(wd, "running", 0)
    print("fake run", c.objective.name, c.objective.k, "seed", c.seed, flush=True)
    if c.train.num_epochs == 999:
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        while not stop:
            time.sleep(0.02)
        _status(wd, "preempted", 7, "SIGTERM")
        sys.exit(3)
    if c.objective.k == 13:
        print("Traceback: unlucky K", file=sys.stderr)
        _status(wd, "failed", 3, "unlucky K")
        sys.exit(1)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    k = c.objective.k
    elbo = -30.0 + 0.25 * c.seed
    iwae = {str(kk): elbo + 0.5 * (kk > 1) + 0.1 * (kk >= 50) for kk in c.eval.ks}
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        for step in (100, 200, 300):
            key = "iwae" if c.objective.name.startswith("iwae") else "elbo"
            f.write(json.dumps({"step": step, "epoch": step / 50, "split": "train", key: elbo - 300.0 / step}) + "\\n")
        f.write(json.dumps({"step": 300, "epoch": 6.0, "split": "valid", "iwae_50": elbo + 0.4}) + "\\n")
    results = {
        "name": c.name, "workdir": wd, "status": "finished", "config": c.to_dict(),
        "summary": {"dataset": c.data.name, "objective": c.objective.name, "k": k, "flow": c.model.flow,
                    "flow_length": c.model.flow_length, "beta": c.objective.beta, "seed": c.seed,
                    "latent_dim": c.model.latent_dim},
        "test": {"elbo": elbo, "reconstruction": elbo + 7, "kl": 7.0, "iwae": iwae,
                 "nll": -iwae[str(max(c.eval.ks))], "nll_k": max(c.eval.ks), "active_units": 5,
                 "mutual_information": 2.5, "marginal_kl": 4.0, "mean_kl": 7.0, "exact_log_px": None,
                 "num_examples": 10},
        "train": {"steps": 300, "epochs": c.train.num_epochs, "wall_time_s": time.time() - start,
                  "examples_per_s": 1000.0},
        "eval_wall_time_s": 0.1, "curves": "metrics.jsonl"}
    with open(os.path.join(wd, "results.json"), "w") as f:
        json.dump(results, f)
    _status(wd, "finished", 300)
    if os.environ.get("FAKE_SIGTERM_AT_EXIT"):  # a signal while exiting, after it finished (default handler)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


if __name__ == "__main__":
    app.run(main)
'''

TINY = '''
from jaxvae.experiment.configs import base_config
from jaxvae.sweeps import product, zipped


def get_config():
    c = base_config()
    c.name = "tiny"
    c.eval.ks = (1, 5, 50)
    return c


def get_sweep():
    return product({{"objective.k": {ks}}}, {{"seed": [0, 1]}})
'''


def _write_experiment(tmp_path: Path, name: str = "tiny", ks=(1, 5), body: str | None = None) -> str:
    exp_dir = tmp_path / "experiments"
    exp_dir.mkdir(exist_ok=True)
    (exp_dir / f"{name}.py").write_text(body if body is not None else TINY.format(ks=list(ks)))
    return f"experiments/{name}.py"


@pytest.fixture
def env(tmp_path: Path) -> dict:
    (tmp_path / "fake_runner.py").write_text(FAKE_RUNNER)
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["JAXVAE_RUN_MODULE"] = "fake_runner"
    e["PYTHON"] = sys.executable
    e.pop("CUDA_VISIBLE_DEVICES", None)
    return e


def _launch(args, cwd, env, timeout=120, **kw):
    return subprocess.run([str(LAUNCH), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


# ----------------------------------------------------------------------------------------------------
# Declaring and naming


def test_product_zipped_chain():
    assert product({"objective.k": [1, 5]}, {"seed": [0, 1]}) == [
        {"objective.k": 1, "seed": 0}, {"objective.k": 1, "seed": 1},
        {"objective.k": 5, "seed": 0}, {"objective.k": 5, "seed": 1}]
    assert product({"objective.k": [1, 5], "seed": [0, 1]}) == product({"objective.k": [1, 5]}, {"seed": [0, 1]})
    assert product(objective__k=[1, 5]) == [{"objective.k": 1}, {"objective.k": 5}]
    assert product({"seed": 3}) == [{"seed": 3}]  # a scalar is a constant
    assert product({"model.encoder_hidden": [(64, 64), (32,)]}) == [
        {"model.encoder_hidden": (64, 64)}, {"model.encoder_hidden": (32,)}]
    z = zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]})
    assert z == [{"objective.name": "elbo", "objective.k": 1}, {"objective.name": "iwae", "objective.k": 5}]
    assert zipped({"a": [1, 2], "b": "x"}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]  # broadcast
    assert len(product(z, {"seed": [0, 1, 2]})) == 6
    assert chain(z, [{"objective.name": "iwae_dreg", "objective.k": 5}]) == z + [
        {"objective.name": "iwae_dreg", "objective.k": 5}]
    assert chain({"seed": [0, 1]}) == [{"seed": 0}, {"seed": 1}]
    with pytest.raises(ValueError):
        zipped({"a": [1, 2], "b": [1, 2, 3]})
    with pytest.raises(ValueError):
        product({"a": [1]}, {"a": [2]})
    with pytest.raises(ValueError):
        product({"a": []})
    assert sweep.normalize_sweep(None) == [{}]
    assert sweep.normalize_sweep({"seed": [0, 1]}) == [{"seed": 0}, {"seed": 1}]
    assert sweep.normalize_sweep([{"eval.ks": [1, 5]}]) == [{"eval.ks": (1, 5)}]
    with pytest.raises(ValueError):
        sweep.normalize_sweep([{"objective k": 1}])


def test_run_names_readable_unique_sanitized():
    pts = product({"objective.k": [1, 50]}, {"seed": [0, 1]})
    assert run_names(pts) == ["k=1,seed=0", "k=1,seed=1", "k=50,seed=0", "k=50,seed=1"]
    # keys sorted by label, as in runs/quickstart/k=5,name=iwae
    assert run_names([{"objective.name": "iwae", "objective.k": 5}]) == ["k=5,name=iwae"]
    # two fields sharing a last component -> full dotted paths for those
    names = run_names([{"objective.name": "elbo", "data.name": "mnist", "seed": 0}])
    assert names == ["data.name=mnist,objective.name=elbo,seed=0"]
    # unsafe characters, tuples, floats, bools, empty strings
    names = run_names([{"data.name": "tfds:foo/bar baz", "model.encoder_hidden": (64, 32),
                        "train.learning_rate": 1e-3, "eval.images": False, "data.manual_dir": ""}])
    assert names == ["encoder_hidden=64-32,images=False,learning_rate=0.001,manual_dir=empty,name=tfds_foo_bar_baz"]
    for n in names:
        assert "/" not in n and " " not in n and ":" not in n
    # collisions after sanitizing, and duplicate points, get a suffix
    assert run_names([{"data.name": "a/b"}, {"data.name": "a:b"}]) == ["name=a_b", "name=a_b_2"]
    assert run_names([{"seed": 1}, {"seed": 1}]) == ["seed=1", "seed=1_2"]
    assert run_names([{}]) == ["default"]
    long = run_names([{"data.name": "x" * 500}])[0]
    assert len(long) <= sweep.MAX_NAME_LEN and long != run_names([{"data.name": "x" * 499}])[0]
    assert sweep.flag_value((1, 5)) == "(1,5)" and sweep.flag_value((1,)) == "(1,)"
    assert sweep.flag_value(("a", "b")) == "('a','b')" and sweep.flag_value(1e-4) == "0.0001"


def test_list_and_default_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _write_experiment(tmp_path, ks=(1, 50))
    assert sweep.main([exp, "--list"]) == 0
    out = capsys.readouterr().out
    assert "# 4 run(s)" in out
    for name in ("k=1,seed=0", "k=1,seed=1", "k=50,seed=0", "k=50,seed=1"):
        assert f"runs/tiny/{name}" in out
    assert "objective.k=50 seed=1" in out and "new" in out
    assert sweep.main([exp, "--list", "--root", "elsewhere"]) == 0
    assert "elsewhere/tiny/k=1,seed=0" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # --list writes nothing
    # a file without get_sweep is a one-point sweep named default
    plain = _write_experiment(tmp_path, "plain", body="from jaxvae.experiment.configs import base_config\n"
                                                       "def get_config():\n    return base_config()\n")
    assert sweep.main([plain, "--list"]) == 0
    assert "runs/plain/default  (no overrides)" in capsys.readouterr().out
    # a sweep key that is not a config field is caught before anything runs
    bad = _write_experiment(tmp_path, "bad", body=TINY.format(ks=[1]).replace('"seed"', '"sede"'))
    assert sweep.main([bad, "--list"]) == 2
    assert "sede" in capsys.readouterr().err


def test_dry_run_prints_commands_with_passthrough(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _write_experiment(tmp_path)
    rc = sweep.main([exp, "--dry-run", "--config.train.num_epochs=1", "--config.eval.ks", "(1,5)",
                     "--runner-module", "some.runner"])
    assert rc == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert len(lines) == 4
    for line, (k, seed) in zip(lines, [(1, 0), (1, 1), (5, 0), (5, 1)]):
        assert " -m some.runner " in line
        assert f"--config={exp}" in line
        assert f"--workdir=runs/tiny/k={k},seed={seed}" in line
        assert f"--config.objective.k={k} --config.seed={seed}" in line
        assert line.endswith("--config.train.num_epochs=1 '--config.eval.ks=(1,5)'")
    assert not (tmp_path / "runs").exists()
    # --only: a name (names hold commas) or indices
    assert sweep.main([exp, "--dry-run", "--only", "k=5,seed=0", "--only", "0,1", "--no-vectorize"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split("--workdir=")[1].split()[0] for l in lines] == [
        "runs/tiny/k=1,seed=0", "runs/tiny/k=1,seed=1", "runs/tiny/k=5,seed=0"]


# ----------------------------------------------------------------------------------------------------
# Local launches


def _launches(workdir: Path) -> list[dict]:
    return [json.loads(l) for l in (workdir / "launches.txt").read_text().splitlines()]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and >= 2 CPUs")
def test_parallel_cpu_runs_get_their_own_cpus(tmp_path, env):
    """Without GPUs, --parallel 2 pins each run to its half of the CPUs (XLA sizes its thread pools from
    the affinity mask, so the two runs no longer share every core); --no-pin leaves them all."""
    exp = _write_experiment(tmp_path)
    env = dict(env, FAKE_SLEEP="0.5", PATH="/usr/bin:/bin")  # no nvidia-smi: a CPU-only host
    mine = sorted(os.sched_getaffinity(0))
    p = _launch([exp, "--parallel", "2", "--no-report", "--no-vectorize"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    sets = [tuple(_launches(tmp_path / "runs" / "tiny" / n)[0]["cpus"])
            for n in ("k=1,seed=0", "k=1,seed=1", "k=5,seed=0", "k=5,seed=1")]
    half = len(mine) // 2
    assert set(sets) == {tuple(mine[:half]), tuple(mine[half:])}, sets
    assert "cpus=" in (tmp_path / "runs" / "tiny" / "k=1,seed=0" / "log.txt").read_text()
    p = _launch([exp, "--parallel", "2", "--no-report", "--no-vectorize", "--no-pin", "--rerun"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _launches(tmp_path / "runs" / "tiny" / "k=1,seed=0")[-1]["cpus"] == mine



@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and >= 2 CPUs")
def test_pinning_does_not_fork_a_launcher_that_started_jax(tmp_path, env):
    """A config that computes with JAX at import starts JAX's threads in the launcher; pinning the runs to
    their CPUs must not fork that process (JAX warns "os.fork() was called"; a fork of a multithreaded
    process can deadlock), so the launcher execs the runs through a pinning program instead."""
    body = TINY.format(ks=[1]).replace("def get_config", "import jax.numpy as jnp\n_ = jnp.ones(2) + 1\n\n\n"
                                                       "def get_config")
    exp = _write_experiment(tmp_path, body=body)
    env = dict(env, PATH="/usr/bin:/bin", JAX_PLATFORMS="cpu")
    p = _launch([exp, "--parallel", "2", "--no-report", "--no-vectorize"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "os.fork()" not in p.stdout + p.stderr
    mine = sorted(os.sched_getaffinity(0))
    half = len(mine) // 2
    sets = {tuple(_launches(tmp_path / "runs" / "tiny" / n)[0]["cpus"]) for n in ("k=1,seed=0", "k=1,seed=1")}
    assert sets == {tuple(mine[:half]), tuple(mine[half:])}, sets

def test_run_signalled_while_exiting_after_it_finished_counts_as_finished(tmp_path, env):
    """A run killed by a signal after it wrote its results (its exit code -15) is finished, not failed."""
    exp = _write_experiment(tmp_path, ks=(1,))
    p = _launch([exp, "--no-report", "--no-vectorize"], tmp_path, dict(env, FAKE_SIGTERM_AT_EXIT="1"))
    assert p.returncode == 0 and "2 finished" in p.stdout and "FAILED" not in p.stdout, p.stdout + p.stderr
    assert json.loads((tmp_path / "runs" / "tiny" / "k=1,seed=0" / "launch.json").read_text())["exit_code"] == -15


def test_manifest_keeps_other_launches_runs_in_declared_order_and_drops_undeclared_ones(tmp_path, env):
    """sweep.json collects the runs of every launch (--only adds to it), in the sweep's order; a run the
    experiment no longer declares leaves it, so the report does not list it as "not started"."""
    def manifest():
        return [r["name"] for r in json.loads((tmp_path / "runs" / "tiny" / "sweep.json").read_text())["runs"]]

    exp = _write_experiment(tmp_path, ks=(1, 5))
    for only, expected in (("2", ["k=5,seed=0"]), ("0", ["k=1,seed=0", "k=5,seed=0"])):
        p = _launch([exp, "--only", only, "--no-report", "--no-vectorize"], tmp_path, env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert manifest() == expected
    _write_experiment(tmp_path, ks=(1, 50))  # the sweep changes: k=5 is no longer declared
    p = _launch([exp, "--only", "1", "--no-report", "--no-vectorize"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert manifest() == ["k=1,seed=0", "k=1,seed=1"]


def test_launch_parallel_then_skip(tmp_path, env):
    exp = _write_experiment(tmp_path)
    env = dict(env, CUDA_VISIBLE_DEVICES="0,1", FAKE_SLEEP="1.5")
    p = _launch([exp, "--parallel", "2", "--config.eval.ks=(1,5,50)"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    names = ["k=1,seed=0", "k=1,seed=1", "k=5,seed=0", "k=5,seed=1"]
    starts, devices = [], set()
    for n in names:
        wd = tmp_path / "runs" / "tiny" / n
        assert (wd / "results.json").exists() and (wd / "log.txt").exists()
        assert "fake run" in (wd / "log.txt").read_text()
        results = json.loads((wd / "results.json").read_text())
        assert results["config"]["eval"]["ks"] == [1, 5, 50]  # the pass-through override reached the run
        assert json.loads((wd / "launch.json").read_text())["exit_code"] == 0
        [launch] = _launches(wd)
        devices.add(launch["cuda"])
        starts.append(launch["start"])
    assert devices == {"0", "1"}  # one GPU per run, round-robin over CUDA_VISIBLE_DEVICES
    starts.sort()
    assert starts[1] - starts[0] < 1.5  # two at a time (each run sleeps 1.5 s)
    assert "4 finished" in p.stdout and "Sweep summary" in p.stdout
    assert "## Runs" in p.stdout and "| k=5,seed=1 |" in p.stdout  # the report follows the sweep
    assert (tmp_path / "runs" / "tiny" / "report.md").exists()
    assert json.loads((tmp_path / "runs" / "tiny" / "sweep.json").read_text())["runs"][3]["name"] == names[3]

    # --list shows them finished; a second launch skips them all
    p2 = _launch([exp, "--list"], tmp_path, env)
    assert p2.stdout.count("finished") == 4
    p3 = _launch([exp, "--parallel", "2", "--no-report"], tmp_path, env)
    assert p3.returncode == 0, p3.stdout + p3.stderr
    assert "4 skipped" in p3.stdout and "## Runs" not in p3.stdout
    for n in names:
        assert len(_launches(tmp_path / "runs" / "tiny" / n)) == 1


def test_failed_run_does_not_stop_the_others(tmp_path, env):
    exp = _write_experiment(tmp_path, ks=(1, 13, 5))
    p = _launch([exp, "--no-report"], tmp_path, env)
    assert p.returncode == 1, p.stdout + p.stderr
    base = tmp_path / "runs" / "tiny"
    for n in ("k=1,seed=0", "k=1,seed=1", "k=5,seed=0", "k=5,seed=1"):
        assert (base / n / "results.json").exists()
    summary = p.stdout[p.stdout.index("Sweep summary"):]
    assert "4 finished" in summary and "2 failed" in summary
    failed = summary[summary.index("failed:"):]
    for n in ("k=13,seed=0", "k=13,seed=1"):
        assert f"runs/tiny/{n}  exit code 1, log: runs/tiny/{n}/log.txt" in failed
        assert "unlucky K" in (base / n / "log.txt").read_text()
    # relaunch: finished runs are skipped, the failed ones run again (and fail again)
    p2 = _launch([exp, "--no-report"], tmp_path, env)
    assert p2.returncode == 1 and "4 skipped" in p2.stdout and "2 failed" in p2.stdout
    assert len(_launches(base / "k=13,seed=0")) == 2 and len(_launches(base / "k=1,seed=0")) == 1


def test_sigterm_preempts_and_relaunch_resumes(tmp_path, env):
    exp = _write_experiment(tmp_path, ks=(1,))
    proc = subprocess.Popen([str(LAUNCH), exp, "--parallel", "2", "--no-report",
                             "--config.train.num_epochs=999"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wds = [tmp_path / "runs" / "tiny" / n for n in ("k=1,seed=0", "k=1,seed=1")]
    deadline = time.time() + 60
    while time.time() < deadline and not all((w / "launches.txt").exists() for w in wds):
        time.sleep(0.05)
    time.sleep(0.5)  # let the fake runners install their SIGTERM handler
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "2 preempted" in out
    for w in wds:
        assert json.loads((w / "status.json").read_text())["status"] == "preempted"
    p2 = _launch([exp, "--no-report"], tmp_path, env)  # resumes (reruns) the preempted runs
    assert p2.returncode == 0 and "2 finished" in p2.stdout
    assert all(len(_launches(w)) == 2 for w in wds)


# ----------------------------------------------------------------------------------------------------
# Slurm and TPU VMs


def test_slurm_dry_run_writes_array_script(tmp_path, env):
    exp = _write_experiment(tmp_path, ks=(1, 5, 50))
    p = _launch([exp, "--slurm", "--dry-run", "--gpus-per-task=1", "--cpus-per-task=8", "--mem=32G",
                 "--time=4:00:00", "--partition=gpu", "--sbatch-arg=--account=abc", "--requeue",
                 "--config.train.num_epochs=3"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    script = tmp_path / "runs" / "tiny" / "sweep.sbatch"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --array=0-5", "#SBATCH --job-name=jaxvae-tiny", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --time=4:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --account=abc", "#SBATCH --requeue",
                 f"#SBATCH --output={tmp_path}/runs/tiny/slurm/%A_%a.out", f"#SBATCH --chdir={tmp_path}"):
        assert line + "\n" in text, line
    assert (tmp_path / "runs" / "tiny" / "slurm").is_dir()
    commands = [l for l in text.splitlines() if " -m fake_runner " in l]
    assert len(commands) == 6  # one command per array task
    for k in (1, 5, 50):
        for seed in (0, 1):
            [c] = [c for c in commands if f"--workdir=runs/tiny/k={k},seed={seed} " in c]
            assert "--config.train.num_epochs=3" in c
    assert "SLURM_ARRAY_TASK_ID" in text and "scontrol requeue" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "sbatch" in p.stdout

    # the task body runs the right command for a given task id (with a fake python), skips finished runs
    script_env = dict(env, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_JOB_ID="42")
    # run the generated body with python replaced by echo
    body = text.replace(sys.executable, "echo")
    (tmp_path / "echo.sbatch").write_text(body)
    r = subprocess.run(["bash", str(tmp_path / "echo.sbatch")], cwd=tmp_path, env=script_env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "runs" / "tiny" / "k=5,seed=1" / "log.txt").read_text()
    assert "-m fake_runner --config=experiments/tiny.py --workdir=runs/tiny/k=5,seed=1" in log
    assert "--workdir=runs/tiny/k=5,seed=0" not in log


def test_slurm_submits_with_sbatch_on_path(tmp_path, env):
    exp = _write_experiment(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    sbatch = fake_bin / "sbatch"
    sbatch.write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/sbatch_args.txt\necho "Submitted batch job 123"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    env = dict(env, PATH=f"{fake_bin}{os.pathsep}{env['PATH']}")
    p = _launch([exp, "--slurm", "--parallel", "2"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Submitted batch job 123" in p.stdout
    assert (tmp_path / "sbatch_args.txt").read_text().strip() == "runs/tiny/sweep.sbatch"
    assert "#SBATCH --array=0-3%2\n" in (tmp_path / "runs" / "tiny" / "sweep.sbatch").read_text()


def test_tpu_hosts_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _write_experiment(tmp_path)
    assert sweep.main([exp, "--tpu-hosts", "my-tpu", "--tpu-zone", "us-central2-b", "--dry-run",
                       "--root", "gs://bucket/runs", "--no-vectorize"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("gcloud compute tpus tpu-vm ssh my-tpu --worker=all --zone=us-central2-b "
                               "'--command=cd ~/jaxvae && python3 -m jaxvae.main --config=experiments/tiny.py "
                               "--workdir=gs://bucket/runs/tiny/k=1,seed=0")


def test_tpu_hosts_runs_gcloud_one_run_at_a_time(tmp_path, env):
    exp = _write_experiment(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    gcloud = fake_bin / "gcloud"
    gcloud.write_text(f'#!/bin/bash\nfor a in "$@"; do echo "$a"; done >> {tmp_path}/gcloud_calls.txt\n'
                      'echo "---" >> ' + f'{tmp_path}/gcloud_calls.txt\necho "remote output"\n')
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    env = dict(env, PATH=f"{fake_bin}{os.pathsep}{env['PATH']}")
    p = _launch([exp, "--tpu-hosts", "my-tpu", "--tpu-zone", "z", "--root", "gs://bucket/runs"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = (tmp_path / "gcloud_calls.txt").read_text().split("---\n")[:-1]
    assert len(calls) == 4
    assert calls[0].splitlines()[:7] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--worker=all", "--zone=z"]
    assert "--workdir=gs://bucket/runs/tiny/k=1,seed=0" in calls[0]
    assert "remote output" in (tmp_path / "runs" / "tiny" / "tpu_logs" / "k=5,seed=1" / "log.txt").read_text()
    assert not (tmp_path / "gs:").exists()


# ----------------------------------------------------------------------------------------------------
# Vectorized Slurm and TPU launches (default runner; a fake python records its argv, nothing trains)

SEEDS = r"""
from jaxvae.experiment.configs import base_config
from jaxvae.sweeps import product, zipped


def get_config():
    return base_config()


def get_sweep():
    # names with quotes, $, backslash and backticks: the --overrides JSON must survive bash and shlex
    return product({"objective.k": [1, 5]},
                   zipped({"seed": [0, 1, 2], "name": ["a'b", 'c"d $HOME', "e\\f `x`"]}))
"""
SEED_NAMES = ["a'b", 'c"d $HOME', "e\\f `x`"]
SEED_RUNS = {k: [f"runs/seeds/k={k},name={n},seed={s}" for s, n in enumerate(("a_b", "c_d_HOME", "e_f_x_"))]
             for k in (1, 5)}
PASS = "--config.data.manual_dir=it's \"q\" $X"

FAKE_PYTHON = """#!{python}
import json, os, sys
print("fake python ran", flush=True)
with open(os.path.join({root!r}, "argv.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def vec(tmp_path, monkeypatch):
    """cwd = tmp_path with experiments/seeds.py; the default runner; a fake python that records argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXVAE_RUN_MODULE", raising=False)
    monkeypatch.delenv("JAXVAE_VECTORIZED_RUN_MODULE", raising=False)
    exp = _write_experiment(tmp_path, "seeds", body=SEEDS)
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable, root=str(tmp_path)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return exp, str(fake)


def _recorded(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "argv.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def _group_argv(k: int, workdirs: list[str], seeds: list[int], passthrough=(PASS,)) -> list[str]:
    """What jaxvae.experiment.vectorized must receive for these members of the seeds sweep (after the python)."""
    return ["-m", "jaxvae.experiment.vectorized", "--config=experiments/seeds.py", *[f"--workdir={w}" for w in workdirs],
            "--overrides=" + json.dumps([{"objective.k": k, "seed": s, "name": SEED_NAMES[s]} for s in seeds],
                                        separators=(",", ":")), *passthrough]


def _script(tmp_path: Path) -> tuple[str, str, list[int]]:
    """The sbatch script, its --array value and its COUNT array (runs per task)."""
    text = (tmp_path / "runs" / "seeds" / "sweep.sbatch").read_text()
    array = next(l.split("=", 1)[1] for l in text.splitlines() if l.startswith("#SBATCH --array="))
    count = next(l for l in text.splitlines() if l.startswith("COUNT=("))
    return text, array, [int(c) for c in count[len("COUNT=("):-1].split()]


def _task(tmp_path: Path, i: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_JOB_ID="42")
    return subprocess.run(["bash", str(tmp_path / "runs" / "seeds" / "sweep.sbatch")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def _finish(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text('{"status": "finished"}')
    (workdir / "status.json").write_text('{"status": "finished", "step": 10}')


def test_slurm_with_gpus_runs_one_array_task_per_vectorized_group(vec, tmp_path, capsys):
    exp, fake = vec
    assert sweep.main([exp, "--slurm", "--dry-run", "--gpus-per-task=1", "--python", fake, PASS]) == 0
    out, err = capsys.readouterr()
    assert "plan: 6 run(s) in 2 process(es); 6 run(s) vectorized in 2 group(s)" in err
    assert "  vectorized x3: k=1,name=a_b,seed=0, k=1,name=c_d_HOME,seed=1, k=1,name=e_f_x_,seed=2" in err
    assert "2 array tasks for 6 run(s)" in out
    text, array, count = _script(tmp_path)
    assert array == "0-1" and count == [3, 3] and "FIRST=(0 3)\n" in text
    assert subprocess.run(["bash", "-n", str(tmp_path / "runs" / "seeds" / "sweep.sbatch")]).returncode == 0
    for i, k in enumerate((1, 5)):  # each task hands its group to jaxvae.experiment.vectorized, quotes intact
        r = _task(tmp_path, i)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "vectorized group of 3 runs, 0 of them finished already" in r.stdout
        assert _recorded(tmp_path)[-1] == _group_argv(k, SEED_RUNS[k], [0, 1, 2])
        first, *others = [tmp_path / w for w in SEED_RUNS[k]]
        log = (first / "log.txt").read_text()
        assert "slurm 42_" + str(i) in log and "fake python ran" in log  # the process's output: first member
        for w in others:  # the other members' log.txt says where the log is
            assert (w / "log.txt").read_text().rstrip().endswith(
                f"trained in a vectorized group of 3 runs; log: {SEED_RUNS[k][0]}/log.txt")
    assert len(_recorded(tmp_path)) == 2
    manifest = json.loads((tmp_path / "runs" / "seeds" / "sweep.json").read_text())
    assert all(" -m jaxvae.experiment.vectorized " in r["command"] for r in manifest["runs"])


def test_slurm_vectorize_default_follows_the_gpu_request_and_flags(vec, tmp_path, capsys):
    exp, fake = vec
    cases = [  # extra flags -> runs per array task
        ([], [1] * 6),  # no GPU asked for: one task per run (the login node's devices don't count)
        (["--gpus-per-task=1"], [3, 3]),
        (["--sbatch-arg=--gres=gpu:a100:2"], [3, 3]),
        (["--sbatch-arg=--gpus=1"], [3, 3]),
        (["--sbatch-arg=--gres=gpu:0"], [1] * 6),
        (["--gpus-per-task=1", "--no-vectorize"], [1] * 6),
        (["--gpus-per-task=1", "--vectorize", "2"], [2, 1, 2, 1]),
        (["--vectorize", "3"], [3, 3]),  # asked for explicitly: also without GPUs
        (["--gpus-per-task=1", "--vectorize", "1"], [1] * 6),
    ]
    for extra, expected in cases:
        assert sweep.main([exp, "--slurm", "--dry-run", "--python", fake, *extra]) == 0, extra
        out, err = capsys.readouterr()
        text, array, count = _script(tmp_path)
        assert count == expected, extra
        assert array == f"0-{len(expected) - 1}", extra
        commands = text[text.index("COMMANDS=(\n"):text.index("\n)\n", text.index("COMMANDS=(\n"))].splitlines()[1:]
        assert [c.count("--workdir=") for c in commands] == expected, extra
        assert all((" -m jaxvae.experiment.vectorized " in c) == (n > 1) for c, n in zip(commands, expected)), extra
        assert all(" -m jaxvae.main " in c for c, n in zip(commands, expected) if n == 1), extra
        assert ("plan: 6 run(s)" in err) == (expected != [1] * 6), extra  # printed when vectorizing
        assert ("note: one Slurm array task per run" in err) == (extra in ([], ["--sbatch-arg=--gres=gpu:0"]))
    # what counts as a GPU request
    parse = lambda *a: sweep.build_parser().parse_args(["x.py", *a])  # noqa: E731
    for yes in (["--gpus-per-task=2"], ["--sbatch-arg=--gres=gpu"], ["--sbatch-arg=--gres gpu:1"],
                ["--sbatch-arg=--gres=shard:1,gpu:v100:4"], ["--sbatch-arg=-G 1"],
                ["--sbatch-arg=--gpus-per-node=a100:8"],
                ["--sbatch-arg=--tres-per-task=gres/gpu:1"]):
        assert sweep.slurm_requests_gpus(parse(*yes)), yes
    for no in ([], ["--gpus-per-task=0"], ["--sbatch-arg=--gres=gpu:0"], ["--sbatch-arg=--gres=shard:2"],
               ["--sbatch-arg=--account=gpu"], ["--partition=gpu"], ["--sbatch-arg=--mem-per-gpu=8G"]):
        assert not sweep.slurm_requests_gpus(parse(*no)), no


def test_slurm_finished_members_are_left_out_and_finished_groups_skipped(vec, tmp_path, capsys):
    exp, fake = vec
    base = tmp_path / "runs" / "seeds"
    _finish(base / "k=1,name=a_b,seed=0")
    assert sweep.main([exp, "--slurm", "--dry-run", "--gpus-per-task=1", "--python", fake, PASS]) == 0
    err = capsys.readouterr().err
    assert "plan: 6 run(s) in 2 process(es); 5 run(s) vectorized in 2 group(s); 1 finished run(s) skipped" in err
    assert "  finished (skipped, not regrouped): k=1,name=a_b,seed=0" in err
    assert "separate processes" not in err
    text, array, count = _script(tmp_path)
    assert array == "0-2" and count == [1, 2, 3]
    r = _task(tmp_path, 0)  # the finished run's task exits at once
    assert r.returncode == 0 and "already finished: runs/seeds/k=1,name=a_b,seed=0" in r.stdout
    assert _recorded(tmp_path) == []
    r = _task(tmp_path, 1)  # the rest of its group: only the unfinished members
    assert r.returncode == 0, r.stdout + r.stderr
    assert _recorded(tmp_path) == [_group_argv(1, SEED_RUNS[1][1:], [1, 2])]
    # a group partly finished when the task runs: it runs again (jaxvae.experiment.vectorized resumes the members)
    _finish(base / "k=5,name=c_d_HOME,seed=1")
    r = _task(tmp_path, 2)
    assert r.returncode == 0 and "vectorized group of 3 runs, 1 of them finished already" in r.stdout
    assert _recorded(tmp_path)[-1] == _group_argv(5, SEED_RUNS[5], [0, 1, 2])
    # a group whose members all finished is skipped
    for w in SEED_RUNS[5]:
        _finish(tmp_path / w)
    r = _task(tmp_path, 2)
    assert r.returncode == 0 and "already finished: " + " ".join(SEED_RUNS[5]) in r.stdout
    assert len(_recorded(tmp_path)) == 2
    # --rerun: every run in the groups again, and the task runs although its runs finished
    assert sweep.main([exp, "--slurm", "--dry-run", "--gpus-per-task=1", "--python", fake, PASS, "--rerun"]) == 0
    assert _script(tmp_path)[1:] == ("0-1", [3, 3])
    r = _task(tmp_path, 1)
    assert r.returncode == 0 and _recorded(tmp_path)[-1] == _group_argv(5, SEED_RUNS[5], [0, 1, 2])


def _remote_argv(gcloud_line_or_args, remote_dir: str) -> list[str]:
    """The argv the remote shell runs for a gcloud ... --command='cd DIR && ...' call."""
    args = shlex.split(gcloud_line_or_args) if isinstance(gcloud_line_or_args, str) else gcloud_line_or_args
    [command] = [a[len("--command="):] for a in args if a.startswith("--command=")]
    prefix = f"cd {remote_dir} && "
    assert command.startswith(prefix), command
    return shlex.split(command[len(prefix):])


def test_tpu_hosts_vectorize_one_gcloud_command_per_group(vec, tmp_path, capsys, monkeypatch):
    exp, fake = vec
    assert sweep.main([exp, "--tpu-hosts", "my-tpu", "--dry-run", "--root", "gs://b/runs", PASS]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and "plan: 6 run(s) in 2 process(es); 6 run(s) vectorized in 2 group(s)" in err
    for line, k in zip(lines, (1, 5)):
        assert line.startswith("gcloud compute tpus tpu-vm ssh my-tpu --worker=all ")
        assert _remote_argv(line, "~/jaxvae") == ["python3"] + _group_argv(
            k, [w.replace("runs/", "gs://b/runs/", 1) for w in SEED_RUNS[k]], [0, 1, 2])
    assert sweep.main([exp, "--tpu-hosts", "my-tpu", "--dry-run", "--vectorize", "2"]) == 0
    assert [l.count("--workdir=") for l in capsys.readouterr().out.splitlines()] == [2, 1, 2, 1]
    assert sweep.main([exp, "--tpu-hosts", "my-tpu", "--dry-run", "--no-vectorize"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(" -m jaxvae.main " in l for l in lines)

    # launched: a fake gcloud runs the --command string through a real shell (as ssh does on each host)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    gcloud = fake_bin / "gcloud"
    gcloud.write_text('#!/bin/bash\nfor a in "$@"; do case "$a" in --command=*) bash -c "${a#--command=}";; '
                      'esac; done\n')
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert sweep.main([exp, "--tpu-hosts", "my-tpu", "--root", "gs://b/runs", "--tpu-remote-dir", str(tmp_path),
                       "--python", fake, "--no-report", PASS]) == 0
    out = capsys.readouterr().out
    assert "Sweep summary: 6 runs: 6 finished" in out
    gs = {k: [w.replace("runs/", "gs://b/runs/", 1) for w in SEED_RUNS[k]] for k in (1, 5)}
    assert _recorded(tmp_path) == [_group_argv(1, gs[1], [0, 1, 2]), _group_argv(5, gs[5], [0, 1, 2])]
    log = tmp_path / "runs" / "seeds" / "tpu_logs" / "k=5,name=a_b,seed=0+2_more" / "log.txt"
    assert "fake python ran" in log.read_text()


# ----------------------------------------------------------------------------------------------------
# The real trainer


@pytest.mark.skipif(not (REPO / "jaxvae" / "main.py").exists(), reason="jaxvae/main.py (the runner) not written yet")
def test_quickstart_sweep_with_real_runner(tmp_path):
    """The real experiments/quickstart.py sweep through launch.sh and jaxvae.main, made tiny. To stay
    fast only its IWAE point trains (--only); the ELBO point's command is checked with --dry-run."""
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("JAXVAE_RUN_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    root = tmp_path / "runs"
    tiny = ["--config.train.num_epochs=1", "--config.eval.ks=(1,5)", "--config.eval.images=False",
            "--config.train.eval_every_epochs=0", "--config.eval.max_examples=100",
            "--config.data.valid_size=200"]
    args = [str(REPO / "experiments" / "quickstart.py"), "--root", str(root), *tiny]
    dry = _launch(args + ["--dry-run"], tmp_path, env)
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) == 2
    assert f"--workdir={root}/quickstart/k=1,name=elbo --config.objective.name=elbo --config.objective.k=1" in dry.stdout
    p = _launch(args + ["--only", "k=5,name=iwae"], tmp_path, env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    results = json.loads((root / "quickstart" / "k=5,name=iwae" / "results.json").read_text())
    assert results["status"] == "finished" and set(results["test"]["iwae"]) == {"1", "5"}
    assert results["summary"]["objective"] == "iwae" and results["summary"]["k"] == 5
    # the report reads main's results.json: the run's row, with its numbers
    row = [l for l in p.stdout.splitlines() if l.startswith("| k=5,name=iwae |")]
    assert len(row) == 1 and f"{results['test']['iwae']['5']:.2f}" in row[0]
    assert (root / "quickstart" / "report_bound_vs_k.png").exists()
