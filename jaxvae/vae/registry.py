"""Registries: names in configs -> model parts and objectives (one small mapping each, as big_vision).

A new prior, flow, likelihood or objective is one class or function plus one decorator line::

    from jaxvae import register_objective

    @register_objective("my_bound")
    def my_bound(model, params, x, key, *, k=1, beta=1.0, **options):
        ...
        return loss, {"my_bound": bound.mean()}

and ``--config.objective.name=my_bound`` then finds it (from an experiment file, or a module named in
``--config.imports=mypkg.bounds``). Imports only the standard library.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator


class Registry:
    """A name -> entry mapping with a decorator to fill it and one clear error for unknown names."""

    def __init__(self, kind: str, config_field: str):
        self.kind = kind
        self.config_field = config_field
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None, *, override: bool = False):
        """``@registry.register("name")`` on a class or function, or ``registry.register("name", obj)``.

        Registering a taken name raises unless ``override`` (or the entry is the very same object, as when
        a module is imported twice)."""

        def add(obj):
            old = self._entries.get(name)
            if old is not None and old is not obj and not override and _same_name(old) != _same_name(obj):
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({_qualname(old)}); "
                                 "pick another name or pass override=True")
            self._entries[name] = obj
            return obj

        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        return add if entry is None else add(entry)

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        guess = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return (f"{self.config_field}={name!r} is not a registered {self.kind} (known: "
                f"{', '.join(sorted(self._entries))}){hint}; register one with jaxvae.register_{self.kind}"
                " in an experiment file or a module listed in --config.imports")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))


def _same_name(obj) -> str:
    """What makes a re-registration the same entry: its name where it is defined (an experiment file
    executed twice, or a notebook cell run again, defines the same class under another module name)."""
    return getattr(obj, "__qualname__", type(obj).__name__)


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


PRIORS = Registry("prior", "model.prior")
LIKELIHOODS = Registry("likelihood", "model.likelihood")
FLOWS = Registry("flow", "model.flow")
OBJECTIVES = Registry("objective", "objective.name")

register_prior: Callable = PRIORS.register
register_likelihood: Callable = LIKELIHOODS.register
register_flow: Callable = FLOWS.register
register_objective: Callable = OBJECTIVES.register


def build(registry: Registry, entry_or_name: Any, model: Any):
    """A part from a name or an already built part: a registered class is built by its
    ``from_model(model)`` classmethod when it has one (to read model-level settings such as
    ``obs_variance``), else by calling it with no arguments."""
    entry = registry.get(entry_or_name) if isinstance(entry_or_name, str) else entry_or_name
    if isinstance(entry, type):
        return entry.from_model(model) if hasattr(entry, "from_model") else entry()
    return entry
