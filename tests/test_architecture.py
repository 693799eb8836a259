"""The layout (import direction between layers), the registries, the custom-parts example end to end,
and the public API (``jaxvae.load_run``)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvae
from jaxvae.vae import objectives as O
from jaxvae.vae.model import VAE
from jaxvae.vae.registry import OBJECTIVES, Registry

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxvae"


@pytest.fixture(autouse=True)
def _restore_registries():
    """Registrations made by a test (custom objectives, the example's parts) do not leak into others."""
    from jaxvae.vae import model as _model  # noqa: F401 - the built-ins are registered first
    from jaxvae.vae import objectives as _objectives  # noqa: F401
    from jaxvae.vae.registry import FLOWS, LIKELIHOODS, PRIORS

    saved = [(r, dict(r._entries)) for r in (OBJECTIVES, PRIORS, FLOWS, LIKELIHOODS)]
    yield
    for r, entries in saved:
        r._entries.clear()
        r._entries.update(entries)


def _jaxvae_imports(path: Path) -> set[str]:
    """Every jaxvae module a file imports (at any depth: lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out.update(n for n in names if n.startswith("jaxvae"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("jaxvae"))
    return out


def _layer_files(layer: str):
    return sorted((PKG / layer).rglob("*.py"))


def test_maths_imports_nothing_from_the_experiment_sweep_or_data_layers():
    files = _layer_files("vae")
    assert len(files) >= 8
    for f in files:
        bad = {m for m in _jaxvae_imports(f) if not m.startswith("jaxvae.vae")}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}: the maths must not import other layers"


def test_sweep_tools_stay_import_light_and_experiment_layer_uses_only_declare():
    """Experiment files import jaxvae.sweeps at config-load time: the launcher modules must not pull in
    JAX (only the report, run after the sweep, may). The runner takes only the vectorizable-field list."""
    for f in _layer_files("sweeps"):
        if f.name in ("report.py", "paper_tables.py", "beta_report.py"):  # run after a sweep, not at launch
            continue
        # the launcher takes the runs' workdir locks (jaxvae.experiment.locks: standard library only)
        bad = {m for m in _jaxvae_imports(f) if not m.startswith(("jaxvae.sweeps", "jaxvae.experiment.locks"))
               and m != "jaxvae.experiment"}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"
        tree = ast.parse(f.read_text())
        heavy = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        heavy |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not heavy & {"jax", "numpy", "flax", "optax", "orbax"}, f.name
    assert not _jaxvae_imports(PKG / "experiment" / "locks.py")
    for f in _layer_files("experiment"):
        bad = {m for m in _jaxvae_imports(f) if m.startswith("jaxvae.sweeps")
               and not m.startswith("jaxvae.sweeps.declare")}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


def test_importing_the_sweep_helpers_does_not_import_jax():
    code = "import sys; from jaxvae.sweeps import product; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- registries ----------------------------------------------------------------------------------------
def test_registry_errors_are_clear():
    reg = Registry("objective", "objective.name")
    reg.register("elbo", len)
    with pytest.raises(ValueError, match=r"objective.name='elbp' is not a registered objective.*did you mean 'elbo'"):
        reg.get("elbp")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("elbo", max)
    reg.register("elbo", len)  # the same object again (a module imported twice) is fine
    reg.register("max", max)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("max", min)
    assert reg.names() == ("elbo", "max") and "elbo" in reg


def test_builtins_are_registered_and_a_custom_objective_runs_through_make_loss_fn():
    assert {"elbo", "elbo_stl", "iwae", "iwae_dreg"} <= set(OBJECTIVES.names())
    assert {"standard_normal"} <= set(jaxvae.PRIORS.names())
    assert {"bernoulli", "gaussian", "gaussian_learned"} <= set(jaxvae.LIKELIHOODS.names())
    assert {"planar", "radial"} <= set(jaxvae.FLOWS.names())

    @jaxvae.register_objective("test_half_iwae", override=True)
    def half_iwae(model, params, x, key, *, k=1, scale=0.5, **_):
        loss, m = O.iwae_loss(model, params, x, key, num_samples=k)
        return scale * loss, m

    model = VAE(x_dim=6, latent_dim=2, encoder_hidden=(5,), decoder_hidden=(5,))
    params = model.init(jax.random.key(0))
    x = (jax.random.uniform(jax.random.key(1), (4, 6)) > 0.5).astype(jnp.float32)
    key = jax.random.key(2)
    ours, _ = O.make_loss_fn(model, "test_half_iwae", k=3, scale=0.25, analytic_kl=True)(params, x, key)
    ref, _ = O.make_loss_fn(model, "iwae", k=3)(params, x, key)
    np.testing.assert_allclose(ours, 0.25 * ref, rtol=1e-6)


def test_config_validation_knows_registered_names_and_imports(tmp_path, monkeypatch):
    from jaxvae.experiment.configs import base_config
    from jaxvae.experiment.validation import ConfigError, override, validate_config

    (tmp_path / "my_bounds_mod.py").write_text(
        "import jaxvae\n"
        "@jaxvae.register_objective('from_imports')\n"
        "def f(model, params, x, key, **_):\n    raise NotImplementedError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="objective.name='from_imports' is not one of"):
        validate_config(override(base_config(), {"objective.name": "from_imports"}))
    validate_config(override(base_config(), {"objective.name": "from_imports", "imports": ("my_bounds_mod",)}))
    with pytest.raises(ConfigError, match="imports: cannot import 'no_such_mod_xyz'"):
        validate_config(override(base_config(), {"imports": ("no_such_mod_xyz",)}))
    with pytest.raises(ConfigError, match="model.prior='vamp' is not one of .*standard_normal.*vampprior"):
        validate_config(override(base_config(), {"model.prior": "vamp"}))


def test_custom_prior_and_flow_parts_compose():
    """The example experiment's prior and flow are pure parts: log p(z) is N(0, s^2 I)'s density, and
    the flow's log-det is the Jacobian's (an elementwise affine map)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import custom_parts as cp
    finally:
        sys.path.pop(0)
    model = VAE(x_dim=6, latent_dim=3, encoder_hidden=(5,), decoder_hidden=(5,), prior="scaled_normal",
                flow="affine", flow_length=2)
    params = model.init(jax.random.key(0))
    params["prior"]["log_scale"] = jnp.asarray(0.3)
    z = jax.random.normal(jax.random.key(1), (4, 3))
    want = jax.scipy.stats.norm.logpdf(z, scale=np.exp(0.3)).sum(-1)
    np.testing.assert_allclose(model.log_prior(params, z), want, rtol=1e-5)
    flow_params = {"a": jnp.asarray([0.1, -0.2, 0.3]), "b": jnp.ones(3)}
    _, log_det = cp.Affine().layer(flow_params, z)
    jac = jax.jacfwd(lambda v: cp.Affine().layer(flow_params, v)[0])(z[0])
    np.testing.assert_allclose(log_det[0], np.linalg.slogdet(np.asarray(jac))[1], rtol=1e-5)


def test_custom_parts_experiment_runs_vectorized_through_launch_sh_and_the_report(tmp_path, run_env):
    """docs/extending.md's example end to end: a custom bound, prior and flow from an experiment file,
    two seeds trained as one vectorized group by ./launch.sh, then the report lists both runs."""
    env = dict(run_env, PYTHON=sys.executable)
    env.pop("JAXVAE_RUN_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    root = tmp_path / "runs"
    tiny = ["--config.train.num_epochs=1", "--config.eval.ks=(1,5)", "--config.eval.images=False",
            "--config.train.eval_every_epochs=0", "--config.eval.max_examples=50",
            "--config.train.steps_per_dispatch=9"]
    p = subprocess.run([str(ROOT / "launch.sh"), str(ROOT / "experiments" / "custom_parts.py"), "--root", str(root),
                        "--vectorize", "2", *tiny], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for seed in (0, 1):
        r = json.loads((root / "custom_parts" / f"seed={seed}" / "results.json").read_text())
        assert r["status"] == "finished" and r["train"].get("vectorized_group")
        assert r["config"]["objective"]["name"] == "vr" and r["config"]["model"]["prior"] == "scaled_normal"
        t = r["test"]
        assert np.isfinite(t["elbo"]) and t["elbo"] <= t["iwae"]["5"] + 1.0  # ELBO <= IWAE_5 (50 examples)
    rows = [l for l in p.stdout.splitlines() if l.startswith("| seed=")]
    assert len(rows) == 2


# -- the public API ------------------------------------------------------------------------------------
@pytest.mark.xdist_group("resume_reference")  # the session-scoped resume_reference run, once
def test_load_run_recomputes_the_results_json_bounds(resume_reference):
    """A finished quickstart run loaded from its workdir: the final evaluation recomputed through the API
    (same examples, same key, last checkpoint) equals results.json."""
    run = jaxvae.load_run(resume_reference, checkpoint="latest")
    results = json.loads((resume_reference / "results.json").read_text())
    assert run.step == results["train"]["steps"] and run.checkpoint == "latest"
    again = run.evaluate()
    np.testing.assert_allclose(again["elbo"], results["test"]["elbo"], rtol=1e-5)
    for k, v in results["test"]["iwae"].items():
        np.testing.assert_allclose(again["iwae"][k], v, rtol=1e-5)
    assert again["active_units"] == results["test"]["active_units"]
    x = run.test_data()
    assert x.shape == (results["test"]["num_examples"], 64)
    post = run.encode(x[:3])
    assert post.mu.shape == (3, 8)
    assert run.sample(4, key=1).shape == (4, 64) and run.reconstruct(x[:2]).shape == (2, 64)
    ll = run.log_likelihood(x[:5], k=50)
    b = run.bounds(x[:5], ks=(1, 50))
    np.testing.assert_allclose(ll.mean(), b["iwae"]["50"], atol=0.5)  # two K=50 estimates, other keys
    assert b["iwae"]["50"] >= b["elbo"] - 0.5
    best = jaxvae.load_run(resume_reference)  # the best checkpoint by the validation bound
    assert best.checkpoint == "best" and best.step in (54, 81)  # validated at 54 and at the end


def test_load_run_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a jaxvae run"):
        jaxvae.load_run(tmp_path)
    with pytest.raises(ValueError, match="choose 'best' or 'latest'"):
        jaxvae.load_run(tmp_path, checkpoint="last")
