"""Sweeps: declaring (product/zipped/chain), naming, --list/--dry-run, local launches through launch.sh
(parallel, skip finished, failures, SIGTERM), Slurm array scripts and TPU VM commands.

Launch tests use a fake runner module (written into tmp_path, selected with JAXVAE_RUN_MODULE) that
parses the same flags as jaxvae.main (ml_collections config_flags) and writes status.json/results.json.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jaxvae import sweep
from jaxvae.sweep import chain, product, run_names, zipped

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
        f.write(json.dumps({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start}) + "\\n")
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


if __name__ == "__main__":
    app.run(main)
'''

TINY = '''
from jaxvae.configs import base_config
from jaxvae.sweep import product, zipped


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
    plain = _write_experiment(tmp_path, "plain", body="from jaxvae.configs import base_config\n"
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
                       "--root", "gs://bucket/runs"]) == 0
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
