"""Declaring sweeps in experiment files: ``product``, ``zipped``, ``chain`` of config-override axes, and the
runner modules the launcher starts. Imports only the standard library (experiment files import it); which
config fields a vectorized group may vary is ``jaxvae.experiment.protocol``'s list."""


from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any



Point = dict[str, Any]
Sweep = list[Point]

DEFAULT_RUNNER = "jaxvae.main"
RUNNER_ENV = "JAXVAE_RUN_MODULE"  # overrides the runner module (tests use a fake runner)
VECTORIZED_RUNNER = "jaxvae.experiment.vectorized"  # trains a group of runs in one process (vmapped over runs)
VECTORIZED_RUNNER_ENV = "JAXVAE_VECTORIZED_RUN_MODULE"  # overrides it (tests)
DEFAULT_VECTORIZE = 16  # the default cap on runs per vectorized process

MAX_NAME_LEN = 120

# ----------------------------------------------------------------------------------------------------
# Declaring sweeps
# ----------------------------------------------------------------------------------------------------


def _axis_values(key: str, values: Any) -> list:
    """An axis is a list/tuple/range of values; a bare scalar is a one-value axis (a constant)."""
    if isinstance(values, (list, tuple, range)):
        values = list(values)
        if not values:
            raise ValueError(f"sweep axis {key!r} has no values")
        return values
    return [values]


def _dotted(key: str) -> str:
    """Keyword-argument axes spell dots as double underscores: ``objective__k`` -> ``objective.k``."""
    return key.replace("__", ".")


def _factor(arg: Any, combine) -> Sweep:
    """A dict of axes -> its points (via ``combine``); a list of points -> itself (validated)."""
    if isinstance(arg, Mapping):
        return combine(arg)
    if isinstance(arg, (list, tuple)):
        points = []
        for p in arg:
            if not isinstance(p, Mapping):
                raise TypeError(f"a sweep is a list of dicts; got an element {p!r}")
            points.append(dict(p))
        return points
    raise TypeError(f"expected a dict of axes or a list of points, got {type(arg).__name__}")


def _merge(points: Iterable[Mapping[str, Any]]) -> Point:
    merged: Point = {}
    for p in points:
        for k, v in p.items():
            if k in merged:
                raise ValueError(f"sweep key {k!r} is set by two factors of a product/zipped")
            merged[k] = v
    return merged


def _product_of_axes(axes: Mapping[str, Any]) -> Sweep:
    keys = list(axes)
    values = [_axis_values(k, axes[k]) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _zip_of_axes(axes: Mapping[str, Any]) -> Sweep:
    keys = list(axes)
    values = [_axis_values(k, axes[k]) for k in keys]
    lengths = {k: len(v) for k, v in zip(keys, values) if len(v) > 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zipped axes must have the same length, got {lengths}")
    n = max((len(v) for v in values), default=1)
    values = [v * n if len(v) == 1 else v for v in values]  # constants broadcast
    return [dict(zip(keys, combo)) for combo in zip(*values)]


def product(*factors: Mapping[str, Any] | Sequence[Mapping[str, Any]], **axes: Any) -> Sweep:
    """Cartesian product. Each positional factor is a dict of axes (``{"objective.k": [1, 5, 50]}``)
    or a sweep (list of points, e.g. from ``zipped``); keyword axes spell dots as ``__``.

    The first axis varies slowest: ``product({"k": [1, 5]}, {"seed": [0, 1]})`` ->
    ``k=1,seed=0; k=1,seed=1; k=5,seed=0; k=5,seed=1``.
    """
    sweeps = [_factor(f, _product_of_axes) for f in factors]
    if axes:
        sweeps.append(_product_of_axes({_dotted(k): v for k, v in axes.items()}))
    if not sweeps:
        return [{}]
    return [_merge(combo) for combo in itertools.product(*sweeps)]


def zipped(*factors: Mapping[str, Any] | Sequence[Mapping[str, Any]], **axes: Any) -> Sweep:
    """Element-wise pairing of axes of equal length (one-value axes broadcast):
    ``zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]})`` -> 2 points.
    Positional sweeps (lists of points) are zipped point by point with the rest.
    """
    sweeps = [_factor(f, _zip_of_axes) for f in factors]
    if axes:
        sweeps.append(_zip_of_axes({_dotted(k): v for k, v in axes.items()}))
    if not sweeps:
        return [{}]
    lengths = {len(s) for s in sweeps if len(s) > 1}
    if len(lengths) > 1:
        raise ValueError(f"zipped sweeps must have the same length, got {sorted(len(s) for s in sweeps)}")
    n = max(len(s) for s in sweeps)
    sweeps = [s * n if len(s) == 1 else s for s in sweeps]
    return [_merge(combo) for combo in zip(*sweeps)]


def chain(*sweeps: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Sweep:
    """Concatenation: the points of ``a`` then those of ``b`` ... (a dict of axes counts as its product)."""
    out: Sweep = []
    for s in sweeps:
        out.extend(_factor(s, _product_of_axes))
    return out


def normalize_sweep(sweep: Any) -> Sweep:
    """What ``get_sweep()`` may return -> a list of points with tuple (not list) values."""
    if sweep is None:
        return [{}]
    points = _factor(sweep, _product_of_axes)
    out = []
    for p in points:
        q = {}
        for k, v in p.items():
            if not isinstance(k, str) or not k or not all(part.isidentifier() for part in k.split(".")):
                raise ValueError(f"sweep key {k!r} is not a dotted config path")
            q[k] = tuple(v) if isinstance(v, list) else v
        out.append(q)
    return out or [{}]


