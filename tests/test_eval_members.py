"""Vectorized evaluation (jaxvae.experiment.eval_driver.evaluate_members): each member's dict equals evaluate_split's
for that member's parameters, data, key and seed; and a vectorized group's results.json test numbers equal
solo runs' with the vmapped evaluation switched on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.experiment.eval_driver import default_max_members, evaluate_members, evaluate_split
from jaxvae.vae.model import VAE

RTOL = 1e-5


def member_params(model, n, x):
    p = np.clip(x.mean(0), 1e-3, 1 - 1e-3)
    bias = jnp.asarray(np.log(p) - np.log1p(-p))
    return [model.init(jax.random.key(10 + i), bias) for i in range(n)]


def stack(trees):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def grey_data(n, d, seed=0):
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)  # pixel intensities in [0, 1)


def assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k, v in b.items():
        if k == "seconds":
            continue
        if isinstance(v, dict):
            assert set(a[k]) == set(v)
            for kk in v:
                assert a[k][kk] == pytest.approx(v[kk], rel=RTOL, abs=1e-5), (k, kk)
        elif isinstance(v, float):
            assert a[k] == pytest.approx(v, rel=RTOL, abs=1e-5), k
        else:
            assert a[k] == v, k


KW = dict(ks=(1, 3, 7), batch_size=16, chunk_size=4, surgery_samples=2)


@pytest.mark.parametrize("binarize,flow", [("dynamic", "none"), ("none", "planar")])
def test_members_equal_evaluate_split(binarize, flow):
    """5 members with different parameters, keys and seeds, in slices of at most 2 (near-equal slices: 2, 1,
    2 members), 37 examples (the last batch padded)."""
    model = VAE(x_dim=12, latent_dim=3, encoder_hidden=(8,), decoder_hidden=(8,), flow=flow,
                flow_length=2 if flow != "none" else 0)
    x = grey_data(37, 12)
    if binarize == "none":
        x = (x > 0.5).astype(np.float32)
    n = 5
    params = member_params(model, n, x)
    keys = [jax.random.key(100 + i) for i in range(n)]
    seeds = [7, 8, 7, 9, 10]
    got = evaluate_members(model, stack(params), x, keys, seeds, binarize=binarize, max_members=2, **KW)
    assert len(got) == n
    for i in range(n):
        want = evaluate_split(model, params[i], x, keys[i], seed=seeds[i], binarize=binarize, **KW)
        assert_same(got[i], want)
    # the members really differ (different parameters, binarizations and keys)
    assert len({r["iwae"]["7"] for r in got}) == n
    if flow == "none":
        assert got[0]["mutual_information"] is not None
    else:
        assert got[0]["mutual_information"] is None


def test_per_member_data_and_shared_dynamic_draw():
    """A list of per-member arrays (as with static binarization per seed); and members sharing one seed
    (one shared dynamic draw) next to each other."""
    model = VAE(x_dim=10, latent_dim=2, encoder_hidden=(6,), decoder_hidden=(6,))
    xs = [(grey_data(20, 10, seed=s) > 0.5).astype(np.float32) for s in range(3)]
    params = member_params(model, 3, xs[0])
    keys = [jax.random.key(i) for i in range(3)]
    got = evaluate_members(model, stack(params), xs, keys, [0, 0, 0], **KW)
    for i in range(3):
        assert_same(got[i], evaluate_split(model, params[i], xs[i], keys[i], seed=0, **KW))
    x = grey_data(20, 10)
    got = evaluate_members(model, stack(params), [x, x, x], keys, [4, 4, 4], binarize="dynamic", **KW)
    for i in range(3):
        assert_same(got[i], evaluate_split(model, params[i], x, keys[i], seed=4, binarize="dynamic", **KW))


def test_bad_arguments_and_default_slices():
    model = VAE(x_dim=4, latent_dim=2, encoder_hidden=(4,), decoder_hidden=(4,))
    x = np.zeros((5, 4), np.float32)
    params = stack(member_params(model, 2, x + 0.5))
    with pytest.raises(ValueError, match="2 stacked"):
        evaluate_members(model, params, x, [jax.random.key(0)], [0], **KW)
    with pytest.raises(ValueError, match="data arrays"):
        evaluate_members(model, params, [x, x[:4]], [jax.random.key(0)] * 2, [0, 0], **KW)
    assert default_max_members(100, 100) == 8
    assert default_max_members(100, 1000) == 1
    assert default_max_members(20, 100) == 40


# -- end to end: a vectorized group's results.json with the vmapped evaluation = member by member ---------
def test_group_with_vectorized_eval_equals_member_by_member(tmp_path, monkeypatch):
    """A group evaluated with one vmapped program gives the numbers of the same group evaluated member by
    member (``evaluate_split`` per member, as a solo run evaluates: tests/test_vectorized.py checks that a
    group's member-by-member results.json equals solo runs'). The member-by-member run here is the fallback
    of a vmapped evaluation that raises, so the fallback is checked too."""
    from jaxvae.experiment import programs
    from jaxvae.experiment import vectorized as V

    from test_vectorized import tiny_config

    calls = []
    real = programs.evaluate_members

    def counting(model, params, xs, keys, seeds, **kw):
        calls.append((len(keys), kw["ks"]))
        return real(model, params, xs, keys, seeds, **kw)

    monkeypatch.setattr(programs, "evaluate_members", counting)
    c = tiny_config()
    c.train.num_epochs = 1
    c.eval.ks = (1, 5, 7)
    members = [{"seed": 0}, {"seed": 1, "train.learning_rate": 3e-3, "objective.beta": 0.5},
               {"seed": 2, "eval.ks": (1, 4), "eval.valid_k": 4}]  # eval settings of its own: evaluated alone
    configs = V.member_configs(c, members)
    lines = []
    group = V.train_group(configs, [tmp_path / f"m{i}" for i in range(3)], log=lines.append,
                          vectorized_eval=True)
    assert not any("sequential" in line for line in lines), lines
    assert calls == [(2, (5,)), (2, (1, 5, 7))]  # validation, then test: members 0 and 1 together
    assert set(group[2]["test"]["iwae"]) == {"1", "4"}
    assert all(g["train"]["vectorized_group"] == 3 and g["test"]["num_examples"] == 50 for g in group)

    # a vmapped evaluation that raises: said in the log, the members are evaluated one by one, same numbers
    def failing(*args, **kw):
        raise RuntimeError("out of memory (test)")

    monkeypatch.setattr(programs, "evaluate_members", failing)
    lines = []
    again = V.train_group(configs, [tmp_path / f"f{i}" for i in range(3)], log=lines.append,
                          vectorized_eval=True)
    assert sum("failed (RuntimeError: out of memory (test)); evaluating them one by one" in line
               for line in lines) == 2  # validation and test
    for i, (a, g) in enumerate(zip(again, group)):
        assert a["train"]["steps"] == g["train"]["steps"]
        assert set(a) == set(g) and set(a["test"]) == set(g["test"])
        for k, v in a["test"].items():
            if isinstance(v, float) and k != "seconds":
                assert g["test"][k] == pytest.approx(v, rel=1e-5, abs=1e-5), (i, k)
        assert g["test"]["iwae"] == pytest.approx(a["test"]["iwae"], rel=1e-5)
        assert g["test"]["active_units"] == a["test"]["active_units"]
        assert g["valid"]["iwae"] == pytest.approx(a["valid"]["iwae"], rel=1e-5)
