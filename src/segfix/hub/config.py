"""``config.json``: reading it, nested or flat, and the one place where old setting names are translated.

:func:`split_config` turns a config object into network arguments and :class:`~segfix.hub.settings.ModelSettings`
(:func:`segfix.hub.mixin.read_config` reads the file). Names that earlier versions wrote, in configs
and in offsets files, become today's in :func:`translate_legacy_names` and nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .settings import FLAT_NAME_OF, FLAT_NAMES, GROUPS, LEGACY_DIRECTION_THRESHOLD, ModelSettings

__all__ = ["split_config", "translate_legacy_names"]


LEGACY_NAMES = {
    LEGACY_DIRECTION_THRESHOLD: ("min_vote_share", "min_direction_confidence"),
    "rule": ("direction_vote",),
    "min_share": ("min_vote_share",),
}
"""Names earlier versions wrote (``direction_threshold`` in configs; ``rule`` and ``min_share`` in offsets files)
-> the settings that replaced them."""


def translate_legacy_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every old name of :data:`LEGACY_NAMES` replaced by today's: ``direction_threshold`` becomes
    ``min_vote_share`` under the vote and ``min_direction_confidence`` otherwise (what it meant there), ``rule``
    (``'argmax'`` / ``'vote'``) becomes ``direction_vote``, ``min_share`` becomes ``min_vote_share``.

    Raises:
        ValueError: an old name given beside its successor (one value would be dropped), or a ``rule`` that is
            neither.
    """
    translated = dict(values)
    for old, successors in LEGACY_NAMES.items():
        if old not in translated:
            continue
        beside = sorted(set(successors) & set(values))
        if beside:
            raise ValueError(f"{old}: the old name of {' and '.join(beside)}, given beside it; keep {beside[0]} alone")
        value = translated.pop(old)
        if old == "rule":
            if value not in ("argmax", "vote"):
                raise ValueError(f"rule: expected 'argmax' or 'vote', got {value!r}")
            translated["direction_vote"] = value == "vote"
        elif old == LEGACY_DIRECTION_THRESHOLD:
            vote = translated.get("direction_vote", values.get("rule") == "vote")
            translated["min_vote_share" if vote else "min_direction_confidence"] = value
        else:
            translated[successors[0]] = value
    return translated


def refuse_settings_among(network: Mapping[str, Any]) -> None:
    """Refuse settings given where network arguments are expected (``SegFix(backbone=..., flip_tta=True)``).

    Raises:
        TypeError: naming them and the two right ways.
    """
    misplaced = sorted((set(network) & set(FLAT_NAMES)) | ({LEGACY_DIRECTION_THRESHOLD} & set(network)))
    if misplaced:
        raise TypeError(
            f"SegFix: {misplaced} are settings, not network arguments; pass them in their group "
            "(e.g. decision=DecisionSettings(...)) or change them with model.with_settings(name=value)"
        )


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], ModelSettings]:
    """A ``config.json`` object, nested or flat -> (network arguments, settings).

    Raises:
        ValueError: a group that is not an object, an unknown setting in a group (named), or an invalid value.
    """
    network: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}  # flat name -> where the config gave it, to refuse a value given twice

    def take(name: str, value: Any, place: str) -> None:
        if name in where:
            raise ValueError(f"{name}: given twice, {where[name]} and {place}; keep one")
        where[name] = place
        flat[name] = value

    for key, value in config.items():
        if key == "network" or (key in GROUPS and isinstance(value, Mapping)):
            if not isinstance(value, Mapping):
                raise ValueError(f"network: expected an object of network arguments, got {value!r}")
            if key == "network":
                for name, item in value.items():
                    if name in network:
                        raise ValueError(f"{name}: given twice, at the top level and in network; keep one")
                    network[name] = item
            else:
                for name, item in value.items():
                    take(_flat_name(key, name), item, f"in {key}")
        elif key in FLAT_NAMES or key == LEGACY_DIRECTION_THRESHOLD:
            take(key, value, "at the top level")
        else:
            if key in network:
                raise ValueError(f"{key}: given twice, at the top level and in network; keep one")
            network[key] = value
    try:
        return network, ModelSettings.from_flat(translate_legacy_names(flat))
    except TypeError as error:
        raise ValueError(str(error)) from error


def _flat_name(group: str, name: str) -> str:
    if (group, name) == ("decision", LEGACY_DIRECTION_THRESHOLD):
        return name
    if (group, name) not in FLAT_NAME_OF:
        known = sorted(f.name for f in dataclasses.fields(GROUPS[group]))
        raise ValueError(f"{group}: unknown setting {name!r}; expected one of {known}")
    return FLAT_NAME_OF[group, name]
