"""Which runs may be trained as one vectorized group: the members' configs (``member_configs``) may differ
only in the fields of ``protocol.VECTORIZED_FIELDS`` (``check_group``), which keep every array shape."""

from __future__ import annotations

from typing import Sequence

import ml_collections

from jaxvae.experiment.configs import flatten
from jaxvae.experiment.protocol import is_vectorizable_field
from jaxvae.experiment.validation import override, validate_config


class GroupError(ValueError):
    """The configs cannot be trained as one vectorized group (they differ in a shape-changing field)."""


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def member_configs(config: ml_collections.ConfigDict, overrides: Sequence[dict]) -> list:
    """One validated config per member: ``config`` with the member's dotted-path overrides applied."""
    out = []
    for ov in overrides:
        c = override(config, {k: _tuplify(v) for k, v in ov.items()})
        validate_config(c)
        out.append(c)
    return out


def differing_fields(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
    """The dotted config fields in which the configs differ."""
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if any(f.get(k) != flats[0].get(k) for f in flats[1:])]


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """GroupError unless the configs differ only in vectorizable fields (``jaxvae.experiment.protocol``'s list)."""
    bad = [k for k in differing_fields(configs) if not is_vectorizable_field(k)]
    if bad:
        raise GroupError(f"these runs cannot be vectorized: they differ in {', '.join(bad)} (only "
                         "fields that keep every array shape may differ, see jaxvae.sweeps.VECTORIZED_FIELDS); "
                         "train them as separate runs")
