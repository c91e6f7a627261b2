"""The tuning policy of the command line: which candidates ``segfix tune`` and ``segfix train --holdout`` try,
and choosing, saving and recording a model's settings in one step (:func:`tune_and_save`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..data.files import atomic_write
from ..prediction.segfix_model import SegFix
from .recipes import TRAIN_EDGE_DISTANCES, TRAIN_THIN_GUARDS, TUNED_MIN_SHORT_SIDES
from .tuning import kept_grids, select_settings

__all__ = ["tune_and_save"]

_logger = logging.getLogger(__name__)


def tune_and_save(
    source: str,
    held_out,
    target: Path,
    settings_file: Path,
    device: str | None = None,
    coarse=None,
    flips: tuple[bool, ...] = (False, True),
    thin_guards: tuple[int, ...] = TRAIN_THIN_GUARDS,
    overrides: dict[str, Any] | None = None,
    search: tuple[str, ...] | None = None,
    edge_distances: tuple[int, ...] = TRAIN_EDGE_DISTANCES,
) -> dict:
    """Choose the settings of the model at ``source`` (with the settings ``overrides``) on ``held_out``
    (refining the ``coarse`` maps, or stand-ins), save the model so tuned to ``target`` and every candidate's
    gains to ``settings_file``. Only the settings in ``search`` are chosen (None: all); the others keep the
    model's values. Returns the chosen settings by flat name."""
    overrides = overrides or {}
    model = SegFix.from_pretrained(source, device=device, **overrides)
    grids: dict[str, Any] = dict(
        min_short_sides=TUNED_MIN_SHORT_SIDES, flips=flips, thin_guards=thin_guards, edge_distances=edge_distances
    )
    if search is not None:
        grids.update(kept_grids(model, search))
    best, rows = select_settings(model, held_out, coarse=coarse, **grids)
    SegFix.from_pretrained(source, **{**overrides, **best}).save_pretrained(target)
    payload = json.dumps({"chosen": best, "candidates": rows}, indent=1)
    atomic_write(settings_file, lambda tmp: tmp.write_text(payload))
    _logger.info("settings chosen on %d held-out images: %s", len(held_out), best)
    return best
