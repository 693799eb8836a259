"""``train.init_from=<workdir>``: start a run from another run's parameters, with a fresh optimizer.

Burda, Grosse & Salakhutdinov (2015), Table 2: a VAE trained to convergence is trained further with the
IWAE objective (k = 50), and an IWAE with the VAE objective, for 3^7 more passes at learning rate 1e-4.
The parameters come from the source run's best checkpoint (``train.init_checkpoint=best``, the validation
bound's best; its latest when it has no best) or latest one; the optimizer state, step counter and PRNG key
are this run's fresh ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from jaxvae.experiment import train as train_lib
from jaxvae.experiment.configs import upgrade_config_dict


class InitFromError(ValueError):
    """train.init_from names a run whose parameters cannot start this one (the message says why)."""


def _restore_params(source: Path, which: str):
    """(params as saved, step, "best"|"latest") of the source run's checkpoint."""
    import orbax.checkpoint as ocp

    from jaxvae.experiment.checkpoints import Checkpoints, settled_event_loops

    if not (source / "checkpoints").is_dir():
        raise InitFromError(f"train.init_from={source}: no checkpoints folder there ({source / 'checkpoints'}); "
                            "point it at the --workdir of a run that has trained")
    ckpts = Checkpoints(source)
    try:
        order = [("best", ckpts.best, ckpts.best.best_step()), ("latest", ckpts.latest, ckpts.latest.latest_step())]
        if which == "latest":
            order = order[1:]
        for name, mngr, step in order:
            if step is None:
                continue
            try:
                with settled_event_loops():  # a failing read leaves no task to report later
                    saved = mngr.restore(step, args=ocp.args.StandardRestore())
            except Exception as e:  # noqa: BLE001 - reported as one line
                raise InitFromError(f"train.init_from={source}: the {name} checkpoint (step {step}) does not "
                                    f"restore ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
            return saved["params"], int(step), name
    finally:
        ckpts.close()
    raise InitFromError(f"train.init_from={source}: no {which} checkpoint in {source / 'checkpoints'}")


def _config_differences(source: Path, config) -> str:
    """The model.* fields in which the source run's config.json and this config differ, as text."""
    try:
        saved = upgrade_config_dict(json.loads((source / "config.json").read_text())).get("model", {})
    except (OSError, ValueError):
        return f"{source / 'config.json'} is unreadable, so the configs cannot be compared"
    here = json.loads(json.dumps(config.model.to_dict()))
    diff = [f"model.{k} ({saved.get(k)!r} in {source / 'config.json'}, {here.get(k)!r} here)"
            for k in sorted(set(saved) | set(here)) if saved.get(k) != here.get(k)]
    return ("the configs differ in " + ", ".join(diff)) if diff else "the model configs agree (another data shape?)"


def check_compatible(source: Path, config, params, template) -> None:
    """InitFromError naming both configs unless ``params`` has ``template``'s tree and shapes."""
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    try:
        got = jax.tree_util.tree_flatten_with_path(params)[0]
    except Exception:  # noqa: BLE001
        got = []
    if len(want) != len(got) or jax.tree_util.tree_structure(template) != jax.tree_util.tree_structure(params):
        names_want = {jax.tree_util.keystr(p) for p, _ in want}
        names_got = {jax.tree_util.keystr(p) for p, _ in got}
        only = sorted(names_want - names_got)[:2] + sorted(names_got - names_want)[:2]
        raise InitFromError(f"train.init_from={source}: its parameters do not fit this model (not in both: "
                            f"{', '.join(only) or 'a different tree'}); {_config_differences(source, config)}")
    for (path, a), (_, b) in zip(want, got):
        if tuple(np.shape(a)) != tuple(np.shape(b)):
            raise InitFromError(
                f"train.init_from={source}: parameter {jax.tree_util.keystr(path)} has shape {tuple(np.shape(b))} "
                f"there but {tuple(np.shape(a))} in this model; {_config_differences(source, config)}")


def apply(config, state: train_lib.TrainState, tx, log=print) -> train_lib.TrainState:
    """``state`` with the parameters of ``config.train.init_from``'s checkpoint (unchanged when it is "")
    and a fresh optimizer state for them; the step, PRNG key and skip count stay ``state``'s (a new run)."""
    source = str(config.train.get("init_from", "") or "")
    if not source:
        return state
    source = Path(source)
    params, step, which = _restore_params(source, config.train.get("init_checkpoint", "best"))
    check_compatible(source, config, params, state.params)
    params = jax.tree_util.tree_map(lambda t, p: np.asarray(p, dtype=np.asarray(t).dtype), state.params, params)
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.params), jax.tree_util.tree_leaves(params))
    log(f"initialised from {source} ({which} checkpoint, step {step}); fresh optimizer")
    return train_lib.TrainState(state.step, params, tx.init(params), state.key, state.skipped)
