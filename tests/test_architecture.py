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


def test_sweep_tools_stay_import_light_and_experiment_layer_imports_no_sweeps():
    """Experiment files import jaxvae.sweeps at config-load time: the launcher modules must not pull in
    JAX (only the report, run after the sweep, may). What the launcher and the runner share (the exit
    code of a preempted run, the vectorizable fields) is jaxvae.experiment.protocol: the experiment layer
    imports nothing from jaxvae.sweeps."""
    light = ("jaxvae.experiment.locks", "jaxvae.experiment.protocol")  # standard library only (below)
    for f in _layer_files("sweeps"):
        if f.parent.name == "report":  # the report package (jaxvae/sweeps/report/): run after a sweep, not at launch
            continue
        # the launcher takes the runs' workdir locks (jaxvae.experiment.locks)
        bad = {m for m in _jaxvae_imports(f) if not m.startswith(("jaxvae.sweeps",) + light)
               and m != "jaxvae.experiment"}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"
        tree = ast.parse(f.read_text())
        heavy = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        heavy |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not heavy & {"jax", "numpy", "flax", "optax", "orbax"}, f.name
    for module in light:
        assert not _jaxvae_imports(PKG / "experiment" / f"{module.rsplit('.', 1)[1]}.py"), module
    for f in _layer_files("experiment"):
        bad = {m for m in _jaxvae_imports(f) if m.startswith("jaxvae.sweeps")}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


def _module_name(path: Path, top: Path) -> str:
    parts = path.relative_to(top.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(top: Path = PKG) -> dict[str, dict[str, str]]:
    """{module: {module it imports: "file:line" of the first such import}} over the package at ``top``
    (the rule is test_no_import_circle_in_the_package's docstring)."""
    files = {_module_name(p, top): p for p in sorted(top.rglob("*.py"))}
    graph: dict[str, dict[str, str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: dict[str, int] = {}

        def add(target, node, name=name, edges=edges):
            if target in files and target != name:
                edges[target] = min(edges.get(target, node.lineno), node.lineno)

        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(a.name, node)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x / from ..y import z
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                for a in node.names:
                    add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base, node)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
                add(node.args[0].value, node)
            elif (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets)
                  and isinstance(node.value, ast.Dict)):  # jaxvae/__init__.py's lazy attributes
                for v in node.value.values:
                    if isinstance(v, ast.Constant):
                        add(v.value, node)
        graph[name] = {t: f"{path.relative_to(top.parent)}:{line}" for t, line in sorted(edges.items())}
    return graph


def _circles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_import_graph_rule_on_a_small_package(tmp_path):
    """The graph builder on a made-up package: a circle through a package ``__init__``, one hidden by a
    lazy import, a relative import, and a package re-exporting its submodules (no circle)."""
    pkg = tmp_path / "pk"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pk.a import f\n",                 # the package re-exports a.f ...
        "a.py": "from pk import g\ndef f(): pass\n",           # ... and a takes a name from the package
        "b.py": "def h():\n    from pk.c import k\n",         # lazy
        "c.py": "from . import b\ndef k(): pass\n",            # relative, a submodule
        "sub/__init__.py": "from pk.sub.d import x\n",       # re-export only: no circle
        "sub/d.py": "import pk.sub.e\nx = 1\n",
        "sub/e.py": "from ..sub import d\n",                 # imports the sibling module itself
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = _import_graph(pkg)
    assert graph["pk.c"] == {"pk.b": "pk/c.py:1"} and set(graph["pk.a"]) == {"pk"}
    assert set(graph["pk.sub"]) == {"pk.sub.d"} and set(graph["pk.sub.e"]) == {"pk.sub.d"}
    assert _circles(graph) == [["pk", "pk.a"], ["pk.b", "pk.c"], ["pk.sub.d", "pk.sub.e"]]


def test_no_import_circle_in_the_package():
    """No import circle anywhere in jaxvae/: every strongly connected component of the import graph is
    one module.

    The graph has a node per module (a package is its ``__init__.py``) and an edge for every import
    statement of a module at any depth: module level or inside a function (a lazy import is a dependency
    too; it only runs later). ``from X import Y`` goes to the submodule ``X.Y`` when there is one, else to
    ``X``; relative imports are resolved; ``importlib.import_module("name")`` and the ``_EXPORTS`` table
    of jaxvae/__init__.py (its lazy attributes) count as imports.

    Packages: importing ``jaxvae.x.y`` makes Python run ``jaxvae/x/__init__.py`` first, but that is not an
    edge, so a package ``__init__`` may import (re-export) its own submodules. A module that imports a
    name from a package (``from jaxvae.x import name``) depends on that ``__init__``: if the ``__init__``
    imports the module, directly or through others, that is a circle through the ``__init__`` (import
    the sibling module itself instead).

    Lazy imports stay only where they defer a heavy import for speed (jaxvae/__init__.py's attributes,
    the sweep CLI's report, matplotlib); those import strictly downward, so they close no circle. Shared
    code goes to a module below both sides, never behind a lazy import."""
    graph = _import_graph()
    assert len(graph) >= 50 and "jaxvae.vae.model" in graph["jaxvae.experiment.building"]
    assert "jaxvae.vae.registry" in graph["jaxvae"]  # the lazy attribute table is read
    lines = []
    for component in _circles(graph):
        lines.append(" <-> ".join(component) + ":")
        lines += [f"    {a} -> {b} ({where})" for a in component for b, where in sorted(graph[a].items())
                  if b in component]
    assert not lines, "import circles in jaxvae/:\n" + "\n".join(lines)


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


def test_no_module_uses_another_modules_private_names():
    """Issue 27: what one module needs from another is public there. Fails on ``from jaxvae.x import _name``
    and on ``alias._name`` where ``alias`` is an imported jaxvae module (e.g. the vectorized loop's 17 uses of
    ``R._status``, ``R._validate``, ... before the single host loop)."""
    import ast

    found = []
    for path in sorted((ROOT / "jaxvae").rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("jaxvae")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxvae"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
                    aliases.add(a.asname or a.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)
