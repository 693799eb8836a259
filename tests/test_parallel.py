"""Data parallelism on forced CPU devices: 1 device and 4 devices give the same numbers."""

import json
import subprocess
import sys
import textwrap

import pytest
from runhelpers import env_with_xla_flags

SCRIPT = textwrap.dedent(r'''
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jaxvae.experiment import building, parallel, train as T
    from jaxvae.experiment.configs import base_config
    from jaxvae.experiment.eval_driver import evaluate_split

    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    for nd in (1, 4):
        c = base_config()
        c.model.latent_dim = 4
        c.model.encoder_hidden = (32,)
        c.model.decoder_hidden = (32,)
        c.objective.name = "iwae"
        c.objective.k = 5
        c.train.batch_size = 20
        c.data.binarize = "dynamic"
        ds = building.load_data(c)
        model = building.build_model(c, ds.train.shape[1])
        spe = T.steps_per_epoch_for(len(ds.train), c.train.batch_size)
        sched, _ = T.learning_rate_schedule(c, spe)
        tx = T.make_optimizer(c, sched)
        mesh = parallel.make_mesh(nd)
        run_steps = T.make_run_steps(model, c, tx, spe, c.train.batch_size, mesh)
        state = parallel.replicate(T.create_train_state(model, tx, 0), mesh)
        x = parallel.replicate(ds.train, mesh)
        losses = []
        state, info = run_steps(state, x, 1)   # one step
        losses.append(float(info.metrics["loss"]))
        for _ in range(2):                      # a short run: the rest of the epoch, then one more
            state, info = run_steps(state, x, spe - int(state.step) % spe)
            losses.append(float(info.metrics["loss"]))
        assert len(state.params["decoder"]["out"]["bias"].sharding.device_set) == nd
        ev = evaluate_split(model, state.params, ds.test, jax.random.key(1), ks=(1, 50), batch_size=40,
                            mesh=mesh)
        out[nd] = {"losses": losses, "params": [np.asarray(l).tolist() for l in
                   jax.tree_util.tree_leaves(jax.device_get(state.params))], "iwae": ev["iwae"],
                   "elbo": ev["elbo"], "active_units": ev["active_units"]}
    print("RESULT" + json.dumps(out))
''')


@pytest.mark.slow  # 21 s; tests/test_device_counts.py's 4-device run (data-parallel, end to end) is the default sibling
def test_four_devices_equal_one_device(tmp_path):
    env = env_with_xla_flags()
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    # float32 reductions split over 4 devices reorder sums: ~1e-6 relative per step.
    for a, b in zip(one["losses"], four["losses"]):
        assert abs(a - b) <= 1e-4 * abs(a), (one["losses"], four["losses"])
    import numpy as np

    for a, b in zip(one["params"], four["params"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for k in one["iwae"]:
        assert abs(one["iwae"][k] - four["iwae"][k]) <= 1e-4 * abs(one["iwae"][k])
    assert abs(one["elbo"] - four["elbo"]) <= 1e-4 * abs(one["elbo"])
    assert one["active_units"] == four["active_units"]


GROUP_SCRIPT = textwrap.dedent(r'''
    import os, sys
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    import json
    import jax, numpy as np
    from pathlib import Path
    from jaxvae.experiment import vectorized as V
    from jaxvae.experiment.configs import base_config

    assert len(jax.devices()) == 4, jax.devices()
    root = Path(sys.argv[1])
    c = base_config()
    c.model.latent_dim = 4
    c.model.encoder_hidden = (16,)
    c.model.decoder_hidden = (16,)
    c.objective.name = "iwae"
    c.objective.k = 3
    c.train.batch_size = 40
    c.train.num_epochs = 1
    c.data.binarize = "dynamic"
    c.eval.ks = (1, 5)
    c.eval.valid_k = 5
    c.eval.valid_examples = 40
    c.eval.max_examples = 80
    c.eval.images = False
    members = [{"seed": 0}, {"seed": 1, "train.learning_rate": 3e-3}, {"seed": 2, "objective.beta": 0.5},
               {"seed": 3, "train.learning_rate": 1e30}]   # the last one diverges: non-finite, frozen
    out = {}
    # (num_devices, member_shards): one device; 2 member groups x 2 data-parallel; 4 member groups.
    for nd, shards in ((1, 1), (4, 2), (4, 4)):
        c.parallel.num_devices = nd
        c.parallel.member_shards = shards
        lines = []
        res = V.train_group(V.member_configs(c, members), [root / f"{nd}_{shards}" / f"m{i}" for i in range(4)],
                            log=lines.append)
        out[f"{nd}_{shards}"] = {"results": [None if r is None else {"elbo": r["test"]["elbo"],
                                 "iwae": r["test"]["iwae"], "valid": r["valid"]["iwae"]["5"]} for r in res],
                                 "log": [l for l in lines if l.startswith("devices:")]}
    print("RESULT" + json.dumps(out))
''')


@pytest.mark.slow  # 35 s: 1x4, 2x2, 4x1 group meshes (one-device equality of the data mesh stays in the default run)
def test_member_axis_sharded_over_devices_equals_one_device(tmp_path):
    """A vectorized group whose members are split over 2 or 4 forced CPU devices (each member's batch
    data-parallel over the rest) trains the same numbers as on one device; a diverging member is still
    isolated."""
    env = env_with_xla_flags()
    proc = subprocess.run([sys.executable, "-c", GROUP_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["4_2"]["log"] == ["devices: 4 = 2 member group(s) x 2 data-parallel"]
    assert out["4_4"]["log"] == ["devices: 4 = 4 member group(s) x 1 data-parallel"]
    ref = out["1_1"]["results"]
    assert ref[3] is None and all(r is not None for r in ref[:3])
    for key in ("4_2", "4_4"):
        got = out[key]["results"]
        assert got[3] is None
        for a, b in zip(got[:3], ref[:3]):
            # float32 sums split over devices reorder: ~1e-6 relative per step, 1 epoch of steps.
            assert a["elbo"] == pytest.approx(b["elbo"], rel=1e-4)
            assert a["valid"] == pytest.approx(b["valid"], rel=1e-4)
            for k in b["iwae"]:
                assert a["iwae"][k] == pytest.approx(b["iwae"][k], rel=1e-4)


def test_group_mesh_shapes_and_errors():
    from jaxvae.experiment import parallel

    n = len(__import__("jax").devices())
    mesh = parallel.make_group_mesh(0, 6, 0)
    assert mesh.axis_names == ("member", "data")
    assert parallel.member_shards(mesh) * parallel.data_size(mesh) == n
    with pytest.raises(ValueError, match="must divide both"):
        parallel.make_group_mesh(0, 3, n + 1)
