"""Vectorized sweeps (jaxvae.experiment.vectorized): members equal solo runs, a NaN member is isolated, a stopped group
resumes to the uninterrupted numbers, the report reads members, the launcher groups seed-only sweeps and
separates shape-changing ones, and the command line maps outcomes to exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxvae.experiment import building
from jaxvae.experiment import runner as R
from jaxvae import sweeps as sweep
from jaxvae.experiment import train as train_lib
from jaxvae.experiment import vectorized as V
from jaxvae.experiment.checkpoints import Checkpoints
from jaxvae.experiment.configs import base_config

REPO = Path(__file__).resolve().parents[1]

MEMBERS = [
    {"seed": 0},
    {"seed": 1, "train.learning_rate": 3e-3, "objective.beta": 0.5, "objective.kl_warmup_steps": 20},
    {"seed": 2, "train.learning_rate": 1e30},  # diverges: non-finite within a few steps
]


def tiny_config():
    c = base_config()
    c.name = "vec"
    c.data.binarize = "dynamic"
    c.model.latent_dim = 4
    c.model.encoder_hidden = (16,)
    c.model.decoder_hidden = (16,)
    c.objective.name = "iwae"
    c.objective.k = 3
    c.objective.kl_warmup_steps = 10
    c.train.batch_size = 50
    c.train.num_epochs = 2
    c.train.log_every_steps = 10
    c.eval.ks = (1, 5)
    c.eval.valid_k = 5
    c.eval.valid_examples = 50
    c.eval.max_examples = 50
    c.eval.images = False
    return c


def quiet(_):
    pass


def final_params(config, workdir):
    ds = building.load_data(config)
    model = building.build_model(config, ds.train.shape[1])
    spe = train_lib.steps_per_epoch_for(len(ds.train), config.train.batch_size)
    sched, _ = train_lib.learning_rate_schedule(config, spe)
    tx = train_lib.make_optimizer(config, sched)
    template = train_lib.create_train_state(model, tx, config.seed)
    ck = Checkpoints(workdir)
    restored, step = ck.restore_latest(template._asdict())
    ck.close()
    return restored, step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Solo runs of the first two members, and the three members trained as one vectorized group."""
    root = tmp_path_factory.mktemp("vec")
    configs = V.member_configs(tiny_config(), MEMBERS)
    solo = [R.train_and_evaluate(c, root / f"solo{i}", log=quiet) for i, c in enumerate(configs[:2])]
    group_dirs = [root / "group" / f"m{i}" for i in range(3)]
    group = V.train_group(configs, group_dirs, log=quiet)
    return {"root": root, "configs": configs, "solo": solo, "group": group, "group_dirs": group_dirs}


def assert_same_results(a, b, rtol=1e-4):
    assert a["test"]["elbo"] == pytest.approx(b["test"]["elbo"], rel=rtol)
    for k in b["test"]["iwae"]:
        assert a["test"]["iwae"][k] == pytest.approx(b["test"]["iwae"][k], rel=rtol)
    assert a["test"]["nll"] == pytest.approx(b["test"]["nll"], rel=rtol)
    assert a["valid"]["iwae"]["5"] == pytest.approx(b["valid"]["iwae"]["5"], rel=rtol)
    assert a["train"]["steps"] == b["train"]["steps"]


def test_members_equal_solo_runs(runs):
    for i in range(2):
        g, s = runs["group"][i], runs["solo"][i]
        assert g is not None and g["status"] == "finished"
        assert_same_results(g, s)
        assert set(g) == set(s) and set(g["train"]) == set(s["train"]) | {"vectorized_group"}
        assert g["train"]["vectorized_group"] == 3
        assert g["summary"] == s["summary"]
        wd = runs["group_dirs"][i]
        assert json.loads((wd / "status.json").read_text())["status"] == "finished"
        assert json.loads((wd / "config.json").read_text()) == json.loads(
            (runs["root"] / f"solo{i}" / "config.json").read_text())
        gp, gstep = final_params(runs["configs"][i], wd)
        sp, sstep = final_params(runs["configs"][i], runs["root"] / f"solo{i}")
        assert gstep == sstep == 54
        for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(sp)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        # the training curves too
        gm = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
        sm = [json.loads(l) for l in (runs["root"] / f"solo{i}" / "metrics.jsonl").read_text().splitlines()]
        assert [(r["step"], r["split"]) for r in gm] == [(r["step"], r["split"]) for r in sm]
        for a, b in zip(gm, sm):
            for k in ("loss", "iwae", "iwae_5"):
                if k in b:
                    assert a[k] == pytest.approx(b[k], rel=1e-4)


def test_nan_member_is_isolated(runs):
    assert runs["group"][2] is None
    status = json.loads((runs["group_dirs"][2] / "status.json").read_text())
    assert status["status"] == "failed"
    assert "non-finite" in status["message"] and "at step" in status["message"]
    assert not (runs["group_dirs"][2] / "results.json").exists()
    # the members trained next to it still finished with the solo numbers (test above)
    assert all(r is not None for r in runs["group"][:2])


def test_stopped_group_resumes_to_the_uninterrupted_numbers(runs, tmp_path):
    configs = runs["configs"][:2]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(R.Preempted):
        V.train_group(configs, dirs, log=quiet, stop_hook=lambda step: step >= 27)
    for d in dirs:
        st = json.loads((d / "status.json").read_text())
        assert st["status"] == "preempted" and st["step"] == 27
        assert not (d / "results.json").exists()
    first = [json.loads((d / "progress.json").read_text()) for d in dirs]
    assert [p["step"] for p in first] == [27, 27] and all(p["trained_examples"] == 27 * 50 for p in first)
    lines = []
    resumed = V.train_group(configs, dirs, log=lines.append)
    assert any("resuming from checkpoint at step 27" in l for l in lines)
    for r, full, p in zip(resumed, runs["group"][:2], first):
        assert_same_results(r, full, rtol=1e-5)
        # time and throughput accumulate over both segments (progress.json), as for solo runs
        assert r["train"]["wall_time_s"] > p["wall_time_s"] > 0 and r["train"]["examples_per_s"] > 0
    # running the finished group again re-evaluates without losing the training time
    again = V.train_group(configs, dirs, log=quiet)
    for r, a in zip(resumed, again):
        assert_same_results(a, r, rtol=1e-6)
        # (progress.json is written at the last checkpoint, a moment before the first run's loop ended)
        assert a["train"]["wall_time_s"] == pytest.approx(r["train"]["wall_time_s"], rel=0.1)
        assert a["valid"] == r["valid"]
        assert a["train"]["examples_per_s"] == pytest.approx(r["train"]["examples_per_s"])


def test_members_resume_from_different_steps(runs, tmp_path):
    """A member behind the others (here: one that has not started) catches up alone, then they go on
    together; the result equals the uninterrupted run."""
    configs = runs["configs"][:2]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(R.Preempted):
        V.train_group(configs[:1], dirs[:1], log=quiet, stop_hook=lambda step: step >= 27)
    resumed = V.train_group(configs, dirs, log=quiet)
    for r, full in zip(resumed, runs["group"][:2]):
        assert_same_results(r, full, rtol=1e-5)


def test_report_reads_vectorized_members(runs):
    from jaxvae.sweeps import report

    text = report.write_report(str(runs["root"] / "group"), plots=False, verbose=False)
    assert "m0" in text and "m1" in text and "m2" in text
    assert f"{runs['group'][0]['test']['iwae']['5']:.2f}" in text
    assert "failed" in text


def test_group_check_rejects_shape_changing_fields():
    cs = V.member_configs(tiny_config(), [{"seed": 0}, {"objective.k": 5}])
    with pytest.raises(V.GroupError, match="objective.k"):
        V.check_group(cs)
    V.check_group(V.member_configs(tiny_config(), [{"seed": 0}, {"eval.ks": (1, 2)}, {"objective.beta": 2.0}]))


def test_launcher_groups_seed_sweeps_and_separates_shape_changing_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "s.py").write_text(
        "from jaxvae.experiment.configs import base_config\n"
        "from jaxvae.sweeps import product\n"
        "def get_config():\n    return base_config()\n"
        "def get_sweep():\n"
        "    return product({'objective.k': [1, 5]}, {'seed': [0, 1, 2]}, {'train.learning_rate': [1e-3, 3e-3]})\n")
    assert sweep.main(["experiments/s.py", "--dry-run", "--vectorize", "4"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4  # 2 values of k x 6 runs each, in groups of at most 4: 4 + 2, 4 + 2
    assert all(" -m jaxvae.experiment.vectorized " in l for l in lines)
    counts = [l.count("--workdir=") for l in lines]
    assert counts == [4, 2, 4, 2]
    for l in lines:
        ov = json.loads(l.split("--overrides=")[1].split()[0].strip("'"))
        assert len({o["objective.k"] for o in ov}) == 1
    assert "vectorized x4" in err and "plan: 12 run(s) in 4 process(es)" in err
    # default (no flag): on an accelerator host, groups of up to DEFAULT_VECTORIZE; on CPU, one per run
    monkeypatch.setattr(sweep.cli, "has_accelerator", lambda: True)
    assert sweep.main(["experiments/s.py", "--dry-run"]) == 0
    assert [l.count("--workdir=") for l in capsys.readouterr().out.splitlines()] == [6, 6]
    monkeypatch.setattr(sweep.cli, "has_accelerator", lambda: False)
    assert sweep.main(["experiments/s.py", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 12
    assert sweep.main(["experiments/s.py", "--dry-run", "--no-vectorize"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 12 and all(" -m jaxvae.main " in l for l in out)


def test_group_runs_compares_unset_fields_with_the_config():
    runs = [sweep.Run(0, "a", "a", {"objective.k": 1}), sweep.Run(1, "b", "b", {"seed": 3}),
            sweep.Run(2, "c", "c", {"objective.k": 5})]
    groups = sweep.group_runs(runs, 8, {"objective.k": 1, "seed": 0})
    assert [[r.name for r in g] for g in groups] == [["a", "b"], ["c"]]
    assert [[r.name for r in g] for g in sweep.group_runs(runs, 8, None)] == [["a"], ["b"], ["c"]]
    assert sweep.is_vectorizable_field("eval.ks") and not sweep.is_vectorizable_field("model.latent_dim")


def test_command_line_exit_codes(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base = [sys.executable, "-m", "jaxvae.experiment.vectorized", f"--config={REPO / 'experiments' / 'quickstart.py'}",
            f"--workdir={tmp_path / 'a'}", f"--workdir={tmp_path / 'b'}"]
    p = subprocess.run(base + ['--overrides=[{"seed": 0}, {"objective.k": 1}]'], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2 and "objective.k" in p.stderr
    p = subprocess.run(base + ['--overrides=[{"seed": 0}]'], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "--overrides" in p.stderr


TINY_EXPERIMENT = '''
from jaxvae.experiment.configs import base_config
from jaxvae.sweeps import zipped


def get_config():
    c = base_config()
    c.name = "tinyvec"
    c.model.latent_dim = 2
    c.model.encoder_hidden = (8,)
    c.model.decoder_hidden = (8,)
    c.train.batch_size = 100
    c.train.num_epochs = 1
    c.eval.ks = (1, 2)
    c.eval.valid_k = 2
    c.eval.valid_examples = 20
    c.eval.max_examples = 20
    c.eval.images = False
    return c


def get_sweep():
    return zipped({"seed": [0, 1], "train.learning_rate": [1e-3, 1e30]})
'''


def test_launch_sh_trains_a_group_and_reports_each_member(tmp_path):
    """launch.sh -> one jaxvae.experiment.vectorized process for the two runs; the diverging member fails alone
    (exit code 1, per-run summary), the other finishes; a relaunch skips the finished one."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tv.py").write_text(TINY_EXPERIMENT)
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("JAXVAE_RUN_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.run([str(REPO / "launch.sh"), "experiments/tv.py", "--no-report", "--vectorize", "16"],
                       cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-3000:]
    assert "vectorized x2" in out and "[1/1] FAILED" in out
    ok, bad = tmp_path / "runs" / "tv" / "learning_rate=0.001,seed=0", tmp_path / "runs" / "tv" / "learning_rate=1e+30,seed=1"
    assert json.loads((ok / "status.json").read_text())["status"] == "finished"
    assert json.loads((bad / "status.json").read_text())["status"] == "failed"
    summary = out.split("Sweep summary:")[1]
    assert "1 finished" in summary and "1 failed" in summary
    log = (ok / "log.txt").read_text()
    assert "jaxvae.experiment.vectorized" in log and "non-finite" in log


def test_group_validates_at_a_final_step_mid_epoch_like_solo(tmp_path):
    """A run ending mid-epoch (fractional train.budget) is validated at its last step, solo or in a group
    (one rule, runner.due_for_validation), with the same bound."""
    c = tiny_config()
    c.train.budget = 0.7  # 2 epochs x 0.7 = 1.4 epochs: the run ends mid-epoch
    configs = V.member_configs(c, [{"seed": 0}, {"seed": 1}])
    solo = R.train_and_evaluate(configs[0], tmp_path / "solo", log=quiet)
    group = V.train_group(configs, [tmp_path / "g0", tmp_path / "g1"], log=quiet)
    steps = solo["train"]["steps"]
    assert steps % round(steps / solo["train"]["epochs"]) != 0  # really mid-epoch
    assert solo["valid"] is not None and group[1]["valid"] is not None
    assert_same_results(group[0], solo, rtol=1e-5)
    valid_steps = [json.loads(l)["step"] for l in (tmp_path / "g0" / "metrics.jsonl").read_text().splitlines()
                   if json.loads(l)["split"] == "valid"]
    assert valid_steps[-1] == steps


def test_failing_final_evaluation_leaves_the_run_failed_not_running(tmp_path, monkeypatch):
    """An error in the final test evaluation (after training finished) records status "failed" with the
    error, and keeps the final checkpoint, so a relaunch evaluates again without retraining."""
    c = tiny_config()
    c.train.num_epochs = 1

    def explode(*a, **k):
        raise RuntimeError("evaluation exploded")

    from jaxvae.experiment import evaluations

    monkeypatch.setattr(evaluations.Bounds, "run", explode)
    with pytest.raises(RuntimeError, match="evaluation exploded"):
        R.train_and_evaluate(c, tmp_path / "run", log=quiet)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "evaluation exploded" in status["message"]
    _, step = final_params(c, tmp_path / "run")
    assert step == status["step"] > 0
    assert not (tmp_path / "run" / "results.json").exists()


def test_group_whose_joint_test_evaluation_fails_evaluates_member_by_member(tmp_path, monkeypatch):
    """The members' joint (vmapped) test evaluation failing, e.g. out of memory, is not the end of the
    group: each member is then evaluated on its own, to the same numbers."""
    c = tiny_config()
    c.train.num_epochs = 1
    configs = V.member_configs(c, [{"seed": 0}, {"seed": 1}])
    from jaxvae.experiment.programs import GroupProgram

    real = GroupProgram.evaluate_together

    def joint(self, members, spec, log, what):
        if what == "test":
            raise MemoryError("too many members at once")
        return real(self, members, spec, log, what)

    monkeypatch.setattr(GroupProgram, "evaluate_together", joint)
    lines = []
    dirs = [tmp_path / "g0", tmp_path / "g1"]
    results = V.train_group(configs, dirs, log=lines.append, vectorized_eval=True)
    assert any("joint test evaluation failed (MemoryError" in line for line in lines)
    assert all(r is not None and np.isfinite(r["test"]["nll"]) for r in results)
    assert [json.loads((d / "status.json").read_text())["status"] for d in dirs] == ["finished", "finished"]
    solo = R.train_and_evaluate(configs[1], tmp_path / "solo", log=quiet)
    assert_same_results(results[1], solo, rtol=1e-5)


def test_stored_numbers_are_reproduced_bit_for_bit(runs):
    """Issue 27: the solo run, the group of three (its diverging member included) and load_run().evaluate()
    reproduce the numbers stored from the code before the single host loop (tests/stored_numbers.py)."""
    import stored_numbers as S

    got = S.collect(runs, final_params)
    if os.environ.get(S.WRITE_ENV) == "1":
        S.STORED.parent.mkdir(exist_ok=True)
        S.STORED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {S.STORED}")
    want = json.loads(S.STORED.read_text())
    exact = want["cpu"] == S.cpu_signature() and want.get("jaxlib") == S.jaxlib_version()  # else rtol 1e-5
    # evaluate() now runs every registered evaluation: the stored (bounds) numbers, and the rest equal to
    # results.json's "test" entry
    extra = {k: v for k, v in got["evaluate"].items() if k not in want["evaluate"]}
    assert extra and all(v == got["solo"]["results"][f"test.{k}"] for k, v in extra.items()), extra
    got["evaluate"] = {k: v for k, v in got["evaluate"].items() if k in want["evaluate"]}
    diffs = S.compare(got, want, exact=exact)
    assert not diffs, f"{len(diffs)} differences ({'exact' if exact else 'rtol 1e-5'}): " + "; ".join(diffs[:8])
    assert want["group"][2]["status"] == "failed" and "results" in want["group"][0]
