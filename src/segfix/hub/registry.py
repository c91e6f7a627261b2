"""The registry of pretrained SegFix models: those bundled with the package, as data, and whether the Hub answers.

Bundled models live in ``segfix/models/<name>/`` (``config.json`` + ``model.safetensors`` + a model card) and load
with ``SegFix.from_pretrained(name)``; nothing here downloads anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "BundledModel", "list_models"]


@dataclass(frozen=True)
class BundledModel:
    """Metadata of a model shipped inside the package."""

    name: str
    description: str
    license: str
    num_directions: int = 8
    weights_of: str | None = None
    """The bundled model whose ``model.safetensors`` this one loads (the same network with other settings, so
    the package holds the weights once); None: its own."""


BUNDLED_MODELS: dict[str, BundledModel] = {
    # The recommended model comes first: list_models() keeps this order.
    "camvid-lite0-v7": BundledModel(
        name="camvid-lite0-v7",
        description="camvid-lite0-v6 that keeps refinement near the coarse map's edges: a pixel changes only "
        "where another label lies within 2 px (chosen on held-out CamVid and Cityscapes frames); the first "
        "bundled model that lowers the mean IoU on none of CamVid, Cityscapes and the bundled photo",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
        weights_of="camvid-lite0-v4",
    ),
    "camvid-lite0-v6": BundledModel(
        name="camvid-lite0-v6",
        description="camvid-lite0-v5 for any resolution: large frames are never shrunk below 0.75 for the network, "
        "and a boundary pixel moves only where 70 % of its direction vote agrees (chosen on held-out CamVid and "
        "Cityscapes frames)",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
        weights_of="camvid-lite0-v4",
    ),
    "camvid-lite0-v5": BundledModel(
        name="camvid-lite0-v5",
        description="camvid-lite0-v4's network; refinement keeps the coarse map's thin poles (a thin-part guard "
        "kept to the classes that are thin by nature, chosen on a held-out drive)",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
        weights_of="camvid-lite0-v4",
    ),
    "camvid-lite0-v4": BundledModel(
        name="camvid-lite0-v4",
        description="camvid-lite0-v3 fine-tuned 2400 more steps with copy-paste of thin classes; the network sees "
        "frames at 540x720 pixels; a 5-step direction vote (CamVid train)",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
    ),
}
"""Short names that ``SegFix.from_pretrained`` resolves offline."""

RETIRED_MODELS: dict[str, str] = {
    name: f"docs/model-cards/{name}.md" for name in ("camvid-lite0-v3", "camvid-lite0-v2", "camvid-lite0")
}
"""Models an earlier version bundled, superseded by the recommended one and no longer in the wheel (6 MB of
weights each): the name -> its card, which gives the commands that reproduce it (the weights stay in the
project's history)."""


def bundled_model_dir(name: str) -> Path | None:
    """Folder of a bundled model, or None if ``name`` is not bundled (or its files are absent)."""
    if name not in BUNDLED_MODELS:
        return None
    folder = Path(str(resources.files("segfix") / "models" / name))
    return folder if (folder / "config.json").is_file() else None


def bundled_model_files(name: str) -> tuple[Path, Path] | None:
    """(config.json, model.safetensors) of a bundled model, or None if ``name`` is not bundled or a file is
    absent. The weights may be another bundled model's (:attr:`BundledModel.weights_of`)."""
    folder = bundled_model_dir(name)
    if folder is None:
        return None
    weights_folder = bundled_model_dir(BUNDLED_MODELS[name].weights_of or name)
    weights = weights_folder / "model.safetensors" if weights_folder is not None else None
    return (folder / "config.json", weights) if weights is not None and weights.is_file() else None


def list_models(filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = "") -> list[str]:
    """Names of the models bundled with this installation, usable as ``SegFix.from_pretrained(name)``; the
    recommended one first.

    Args:
        filter: shell-style wildcard(s) a name must match, as timm's ``list_models`` (``"camvid-*"``); empty:
            every model.
        exclude_filters: wildcard(s) a name must not match.
    """
    wanted, unwanted = _patterns(filter, "filter"), _patterns(exclude_filters, "exclude_filters")
    return [
        name
        for name in BUNDLED_MODELS
        if bundled_model_files(name) is not None
        and (not wanted or any(fnmatch.fnmatchcase(name, p) for p in wanted))
        and not any(fnmatch.fnmatchcase(name, p) for p in unwanted)
    ]


def _patterns(value: str | Sequence[str], name: str) -> list[str]:
    patterns = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{name}: expected a wildcard pattern or a list of them, got {value!r}")
    return [p for p in patterns if p]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers, by huggingface_hub's own rules: False at once under ``HF_HUB_OFFLINE``; else one
    HEAD request to the endpoint through huggingface_hub's HTTP session, which honours ``HTTPS_PROXY`` and
    ``HF_ENDPOINT`` as every download does (any answer, even an error status, means reachable)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 - DNS, proxy, TLS and timeout errors all mean "not reachable from here"
        return False
    return True
