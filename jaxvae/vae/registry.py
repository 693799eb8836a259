"""Registries: names in configs -> model parts and objectives (one small mapping each, as big_vision).

A new prior, flow, likelihood or objective is one class or function plus one decorator line::

    from jaxvae import register_objective

    @register_objective("my_bound")
    def my_bound(model, params, x, key, *, k=1, beta=1.0, **options):
        ...
        return loss, {"my_bound": bound.mean()}

and ``--config.objective.name=my_bound`` then finds it (from an experiment file, or a module named in
``--config.imports=mypkg.bounds``). Imports only the standard library.

Options: a flow's or a prior's options are the fields of its (frozen) dataclass, with their defaults
(``declared_options``); the config sets them under ``model.flow_options`` / ``model.prior_options``, and
``build`` passes each part the ones it declares. Adding an option is adding a field::

    @register_flow("iaf")
    @dataclasses.dataclass(frozen=True)
    class IAF:
        hidden: tuple[int, ...] = (64,)   # --config.model.flow_options.hidden=(320,)
        context: int = 0
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterator, Mapping


class Registry:
    """A name -> entry mapping with a decorator to fill it and one clear error for unknown names."""

    def __init__(self, kind: str, config_field: str, options_field: str | None = None):
        self.kind = kind
        self.config_field = config_field
        # the config block of the parts' options (model.flow_options): the VAE field of the same last name
        # holds them, and ``build`` passes a part those it declares
        self.options_field = options_field
        # options every entry takes that no part reads itself (the amortized flow head's: jaxvae.vae.flows)
        self.common_options: dict[str, Any] = {}
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

    def options_of(self, name_or_entry: Any) -> dict[str, Any]:
        """{option: default} that the config's options block holds for one entry: the common options and
        the entry's own (``declared_options``)."""
        entry = self.get(name_or_entry) if isinstance(name_or_entry, str) else name_or_entry
        return {**self.common_options, **declared_options(entry)}

    def known_options(self) -> dict[str, Any]:
        """{option: default} over every registered entry (the names an options block may hold: a config
        that sweeps over flows carries the options of each)."""
        out = dict(self.common_options)
        for name in self.names():
            for k, v in declared_options(self._entries[name]).items():
                out.setdefault(k, v)
        return out

    def unknown_option(self, option: str, selected: Any = None) -> str | None:
        """One line when no registered entry declares ``option`` (naming the options of ``selected``, the
        configured entry, and the closest known name); None when some entry declares it."""
        known = self.known_options()
        if option in known:
            return None
        field = f"{self.options_field}.{option}"
        takes = ""
        if isinstance(selected, str) and selected in self._entries:
            own = sorted(self.options_of(selected))
            takes = f"; {self.config_field}={selected!r} takes {', '.join(own) if own else 'no options'}"
        guess = difflib.get_close_matches(option, list(known), n=1)
        hint = f"; did you mean {self.options_field}.{guess[0]}?" if guess else ""
        return (f"{field} is not an option of any registered {self.kind}{takes} (all known: "
                f"{', '.join(sorted(known)) or 'none'}){hint}")


def _same_name(obj) -> str:
    """What makes a re-registration the same entry: its name where it is defined (an experiment file
    executed twice, or a notebook cell run again, defines the same class under another module name)."""
    return getattr(obj, "__qualname__", type(obj).__name__)


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


PRIORS = Registry("prior", "model.prior", "model.prior_options")
LIKELIHOODS = Registry("likelihood", "model.likelihood")
FLOWS = Registry("flow", "model.flow", "model.flow_options")
OBJECTIVES = Registry("objective", "objective.name")

register_prior: Callable = PRIORS.register
register_likelihood: Callable = LIKELIHOODS.register
register_flow: Callable = FLOWS.register
register_objective: Callable = OBJECTIVES.register


def declared_options(entry: Any) -> dict[str, Any]:
    """{option: default} a part class takes from the config: the fields of its dataclass (those set by
    its constructor); none for a part that is not a dataclass class, or one built by ``from_model``."""
    if not (isinstance(entry, type) and dataclasses.is_dataclass(entry)) or hasattr(entry, "from_model"):
        return {}
    out = {}
    for f in dataclasses.fields(entry):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None  # a required option: the config must set it
    return out


def freeze_options(options: Mapping[str, Any] | Any) -> tuple[tuple[str, Any], ...]:
    """An options block (a mapping, or (name, value) pairs) as sorted (name, value) pairs with lists made
    tuples: hashable, so that a model holding it stays a static jit argument."""
    items = options.items() if hasattr(options, "items") else (options or ())

    def frozen(v):
        if isinstance(v, (list, tuple)):
            return tuple(frozen(x) for x in v)
        if hasattr(v, "items"):
            return tuple(sorted((k, frozen(x)) for k, x in v.items()))
        return v

    return tuple(sorted((str(k), frozen(v)) for k, v in items))


def _coerce(default: Any, value: Any) -> Any:
    """A config value in its option's type where the config's JSON or command line may have changed it
    (an int for a float option, a list for a tuple one)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def options_for(registry: Registry, entry: Any, model: Any) -> dict[str, Any]:
    """The options of ``model``'s options block (``registry.options_field``) that ``entry`` declares."""
    if registry.options_field is None:
        return {}
    given = dict(getattr(model, registry.options_field.rpartition(".")[2], None) or ())
    declared = declared_options(entry)
    return {k: _coerce(declared[k], v) for k, v in given.items() if k in declared}


def build(registry: Registry, entry_or_name: Any, model: Any):
    """A part from a name or an already built part: a registered class is built by its
    ``from_model(model)`` classmethod when it has one (to read model-level settings such as
    ``obs_variance``), else with the options it declares (``declared_options``) from the model's options
    block (``model.flow_options`` / ``model.prior_options``; the fields' defaults for the others)."""
    entry = registry.get(entry_or_name) if isinstance(entry_or_name, str) else entry_or_name
    if isinstance(entry, type):
        if hasattr(entry, "from_model"):
            return entry.from_model(model)
        return entry(**options_for(registry, entry, model))
    return entry
