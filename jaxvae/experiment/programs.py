"""The device programs that the host loop (``jaxvae.experiment.loop``) drives, chosen by member count.

``SoloProgram`` (one member): ``train.make_run_steps``, a fused ``lax.scan`` over the steps of one dispatch,
data-parallel over ``parallel.make_mesh``. ``GroupProgram`` (several members): the same scan ``jax.vmap``-ped
over a leading member axis of stacked parameters, optimizer states and keys, with the traced per-member
hyperparameters of ``protocol.VECTORIZED_TRACED_FIELDS`` (docs/vectorized.md). A solo run is not a group
of one: the vmapped program measured 1.5-1.7x slower for a single member (benchmarks/README.md).

Both answer the same three questions for the loop: ``advance(active, num)`` (train the active members
``num`` steps; returns a ``Dispatch``), ``member_state(i)`` (member i's TrainState, where the evaluation
runs) and ``evaluate_together(...)`` (the members' evaluations in one vmapped program).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.experiment import parallel
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.eval_driver import evaluate_members
from jaxvae.experiment.protocol import VECTORIZED_TRACED_FIELDS


@dataclasses.dataclass
class Dispatch:
    """What one dispatch did, per member (index = member; inactive members keep their numbers)."""

    steps: list[int]  # the step each member is at after the dispatch
    bad_steps: list[int]  # the first non-finite step (-1: none)
    bad_terms: list[int]  # index into train.BAD_TERMS of what was non-finite
    metrics: list[dict]  # the dispatch's training metrics (floats)


class SoloProgram:
    """One member: ``train.make_run_steps`` on its TrainState, each batch split over ``mesh``'s data axis."""

    def __init__(self, model, config, tx, steps_per_epoch: int, batch_size: int, mesh, state, x_train):
        self.mesh = mesh
        self.state = parallel.replicate(state, mesh)
        self.x_train = parallel.replicate(x_train, mesh)
        self._run = train_lib.make_run_steps(model, config, tx, steps_per_epoch, batch_size, mesh)

    def advance(self, active: Sequence[bool], num: int) -> Dispatch:
        self.state, info = self._run(self.state, self.x_train, num)
        metrics = {k: float(v) for k, v in jax.device_get(info.metrics).items()}
        return Dispatch([int(self.state.step)], [int(info.bad_step)], [int(info.bad_term)], [metrics])

    def member_state(self, i: int):
        return self.state

    def evaluate_together(self, members, spec, log, what: str) -> dict:
        return {}  # one member: nothing to evaluate together


def stack_hparams(configs) -> dict:
    """The traced per-member hyperparameters of a group's configs, stacked (float32/int32 arrays of shape
    (members,)): the ``hparams`` argument of ``make_group_steps``' step functions."""
    assert set(VECTORIZED_TRACED_FIELDS) == {"train.learning_rate", "objective.beta", "objective.kl_warmup_steps"}
    return {
        "learning_rate": jnp.asarray([c.train.learning_rate for c in configs], jnp.float32),
        "beta": jnp.asarray([c.objective.beta for c in configs], jnp.float32),
        "kl_warmup_steps": jnp.asarray([int(c.objective.kl_warmup_steps or 0) for c in configs], jnp.int32),
    }


def stack_trees(trees):
    """The pytrees (e.g. the members' train states) stacked leaf by leaf along a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def member_of(stacked, i: int, mesh=None):
    """Member i's unstacked pytree; with ``mesh``, replicated over it (where evaluation runs; a jitted
    gather, so it also works when the members are spread over several processes)."""
    if mesh is None:
        return jax.tree_util.tree_map(lambda a: a[i], stacked)
    return parallel.take(stacked, i, mesh)


def make_group_steps(model, config, tx, tx_for, steps_per_epoch: int, batch_size: int, mesh,
                     per_member_data: bool) -> Callable:
    """``group_steps(stacked_state, x_train, hp, active, num_steps) -> (stacked_state, StepInfo)``:
    the solo ``run_steps`` vmapped over the member axis (inactive members keep their state).

    With a ("member", "data") ``mesh`` (``parallel.make_group_mesh``) the member axis is split over the
    mesh's member axis and each member's batch over its data axis."""
    raw = train_lib.make_run_steps(model, config, tx, steps_per_epoch, batch_size, mesh, tx_for=tx_for,
                                   jit=False, member_axis=parallel.MEMBER_AXIS)
    spmd = parallel.MEMBER_AXIS if mesh is not None and parallel.member_shards(mesh) > 1 else None

    def group_steps(state, x_train, hp, active, num_steps):
        def one(s, x, h):
            new, info = raw(s, x, num_steps, h)
            new = jax.tree_util.tree_map(lambda u, v: jnp.where(h["active"], u, v), new, s)
            return new, info

        return jax.vmap(one, in_axes=(0, 0 if per_member_data else None, 0), axis_name=parallel.MEMBER_AXIS,
                        spmd_axis_name=spmd)(state, x_train, dict(hp, active=active))

    return jax.jit(group_steps, static_argnums=4, donate_argnums=0)


class GroupProgram:
    """Several members: ``make_group_steps`` on their stacked states over ``group_mesh`` (the members split
    over its member axis, each member's batch over its data axis); evaluation on ``eval_mesh``."""

    def __init__(self, model, base_config, configs, tx, steps_per_epoch: int, batch_size: int, group_mesh,
                 eval_mesh, states, datasets, per_member_data: bool):
        def tx_for(hp):
            sched, _ = train_lib.learning_rate_schedule(base_config, steps_per_epoch,
                                                        learning_rate=hp["learning_rate"])
            return train_lib.make_optimizer(base_config, sched)

        self.model, self.group_mesh, self.mesh = model, group_mesh, eval_mesh
        self._by_member = parallel.member_sharded(group_mesh)
        self.stacked = parallel.put(stack_trees(states), self._by_member)
        self.hp = parallel.put(stack_hparams(configs), self._by_member)
        self.x_train = (parallel.put(np.stack([d.train for d in datasets]), self._by_member) if per_member_data
                        else parallel.replicate(datasets[0].train, group_mesh))
        self._steps = make_group_steps(model, base_config, tx, tx_for, steps_per_epoch, batch_size, group_mesh,
                                       per_member_data)

    def advance(self, active: Sequence[bool], num: int) -> Dispatch:
        self.stacked, info = self._steps(self.stacked, self.x_train, self.hp,
                                         parallel.put(np.asarray(active), self._by_member), num)
        info = parallel.fetch(info, self.group_mesh)
        steps = parallel.fetch(self.stacked.step, self.group_mesh)
        n = len(active)
        return Dispatch([int(steps[i]) for i in range(n)], [int(info.bad_step[i]) for i in range(n)],
                        [int(info.bad_term[i]) for i in range(n)],
                        [{k: float(v[i]) for k, v in info.metrics.items()} for i in range(n)])

    def member_state(self, i: int):
        return member_of(self.stacked, i, self.mesh)

    def evaluate_together(self, members, spec, log, what: str) -> dict:
        """``{member index: evaluate_split's dict}`` for ``members`` (objects with ``i`` and ``label``), by
        ``evaluate_members``: one call per sub-group of members with equal evaluation settings (``spec(m) ->
        (x, key, kwargs)``), i.e. the same eval.* values and number of examples. Members alone in their
        sub-group are left out, and so is a sub-group whose vmapped evaluation raised (said in the log): the
        caller evaluates the members it is not given one by one, as a solo run does."""
        groups: dict[str, list] = {}
        for m in members:
            x, key, kw = spec(m)
            kw = dict(kw)
            seed = kw.pop("seed")
            tag = json.dumps([kw, list(np.shape(x))], sort_keys=True, default=str)
            groups.setdefault(tag, []).append((m, x, key, seed, kw))
        out = {}
        for entries in groups.values():
            if len(entries) < 2:
                continue
            ms, xs, keys, seeds, kws = zip(*entries)
            idx = jnp.asarray([m.i for m in ms])
            try:
                params = parallel.take(self.stacked.params, idx, self.mesh)
                res = evaluate_members(self.model, params, list(xs), list(keys), list(seeds), mesh=self.mesh,
                                       **kws[0])
            except Exception as e:  # noqa: BLE001 - the sequential path still evaluates these members
                log(f"vectorized {what} evaluation of members {', '.join(m.label for m in ms)} failed "
                    f"({type(e).__name__}: {e}); evaluating them one by one (sequential path)")
                continue
            out.update({m.i: r for m, r in zip(ms, res)})
        return out
