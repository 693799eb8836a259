"""Any device count runs the default configs (issue 31 item 1): with parallel.num_devices=0 a run whose batch
does not divide over every device uses the most devices it divides over, says so in one line, and gets the
single-device numbers (float tolerance: data-parallel sums reorder float32 additions)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from runhelpers import ROOT, env_with_xla_flags

from jaxvae.experiment.parallel import fit_device_count

SCRIPT = textwrap.dedent(r'''
    import json, sys
    from pathlib import Path
    import jax
    from jaxvae.experiment import runner, vectorized
    from jaxvae.experiment.configs import base_config

    devices, root, what = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    assert len(jax.devices()) == devices, jax.devices()

    def tiny(nd):
        c = base_config()  # the quick start's data (embedded digits) and batch 50
        c.name, c.data.binarize = "dev", "dynamic"
        c.model.latent_dim, c.model.encoder_hidden, c.model.decoder_hidden = 4, (16,), (16,)
        c.objective.name, c.objective.k = "iwae", 3
        c.train.batch_size, c.train.num_epochs, c.parallel.num_devices = 50, 1, nd
        c.eval.ks, c.eval.valid_k, c.eval.valid_examples, c.eval.max_examples, c.eval.images = (1, 5), 5, 50, 50, False
        return c

    out = {}
    for nd in (1, 0):
        lines = []
        if "solo" in what:
            r = runner.train_and_evaluate(tiny(nd), root / f"solo{nd}", log=lines.append)
            out[f"solo{nd}"] = {"iwae": r["test"]["iwae"], "elbo": r["test"]["elbo"], "log": lines}
        if "group" in what:
            lines = []
            configs = vectorized.member_configs(tiny(nd), [{"seed": s} for s in range(4)])
            rs = vectorized.train_group(configs, [root / f"g{nd}" / str(s) for s in range(4)], log=lines.append,
                                        vectorized_eval=False)
            out[f"group{nd}"] = {"iwae": [r["test"]["iwae"] for r in rs], "log": lines}
    print("RESULT" + json.dumps(out))
''')


def _run(tmp_path, devices: int, what: str) -> dict:
    env = env_with_xla_flags(f"--xla_force_host_platform_device_count={devices}")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), str(tmp_path), what], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.split("RESULT", 1)[1])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * abs(b)


def _check(out: dict, devices: int, what: str) -> None:
    used = {1: 1, 2: 2, 3: 2, 4: 2, 5: 5, 8: 5}[devices]  # the most devices that divide batch 50
    if "solo" in what:
        note = [line for line in out["solo0"]["log"] if "data-parallel over" in line]
        assert note == ([] if used == devices else
                        [f"data-parallel over {used} of {devices} devices: batch 50 (the most devices it divides "
                         "over; set parallel.num_devices to choose)"]), out["solo0"]["log"][:3]
        for k, v in out["solo1"]["iwae"].items():
            assert _close(out["solo0"]["iwae"][k], v), (out["solo0"]["iwae"], out["solo1"]["iwae"])
        assert _close(out["solo0"]["elbo"], out["solo1"]["elbo"])
    if "group" in what:
        for a, b in zip(out["group0"]["iwae"], out["group1"]["iwae"]):
            assert all(_close(a[k], b[k]) for k in b), (out["group0"]["iwae"], out["group1"]["iwae"])


def test_fit_device_count():
    assert fit_device_count(50, 4) == 2 and fit_device_count(50, 8) == 5 and fit_device_count(20, 8) == 5
    assert fit_device_count(100, 8) == 5 and fit_device_count(64, 8) == 8 and fit_device_count(50, 1) == 1
    assert fit_device_count(50, 4, processes=2) == 2 and fit_device_count(25, 4, processes=2) == 0
    assert fit_device_count(50, 8, members=4) == 8  # 4 member groups x 2 data-parallel
    assert fit_device_count(50, 8, members=3) == 6  # 3 member groups x 2 data-parallel
    assert fit_device_count(50, 8, members=4, member_shards=2) == 4  # 2 groups x 2
    assert fit_device_count(7, 4) == 1


def test_quickstart_batch_on_four_devices_equals_one_device(tmp_path):
    _check(_run(tmp_path, 4, "solo"), 4, "solo")


@pytest.mark.slow  # one subprocess per device count, ~40 s each; the 4-device solo case above is the sibling
@pytest.mark.parametrize("devices", [2, 3, 8])
def test_solo_and_group_on_any_device_count_equal_one_device(tmp_path, devices):
    _check(_run(tmp_path, devices, "solo,group"), devices, "solo,group")


SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.slow  # two short MNIST runs per device count: 3-4 min in all each; skipped without the shared data
@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").exists(), reason="needs ../shared/data")
@pytest.mark.parametrize("devices", [3, 8])
def test_iwae_mnist_short_run_on_any_device_count_equals_one_device(tmp_path, devices):
    """experiments/iwae_mnist.py unchanged (batch 20) at a short budget (0.0001 of the 3280 passes: 820
    steps), once on one device and once with parallel.num_devices=0 on forced devices: 3 -> 2 of them, 8 -> 5."""
    env = env_with_xla_flags(f"--xla_force_host_platform_device_count={devices}")
    used = {3: 2, 8: 5}[devices]
    out = {}
    for nd in (1, 0):
        wd = tmp_path / f"nd{nd}"
        p = subprocess.run(
            [sys.executable, "-m", "jaxvae.main", "--config=experiments/iwae_mnist.py", f"--workdir={wd}",
             "--config.train.budget=0.0001", f"--config.parallel.num_devices={nd}",
             f"--config.data.manual_dir={SHARED_DATA}", f"--config.data.data_dir={tmp_path / 'tfds'}",
             "--config.eval.ks=(1,5)", "--config.eval.max_examples=200", "--config.eval.valid_examples=200",
             "--config.eval.images=False"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        note = f"data-parallel over {used} of {devices} devices: batch 20"
        assert (note in p.stdout) == (nd == 0), p.stdout[-2000:]
        out[nd] = json.loads((wd / "results.json").read_text())["test"]
    for k, v in out[1]["iwae"].items():
        assert _close(out[0]["iwae"][k], v), (out[0]["iwae"], out[1]["iwae"])
    assert _close(out[0]["elbo"], out[1]["elbo"])
