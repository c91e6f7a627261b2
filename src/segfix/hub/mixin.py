"""Model files: find a model's ``config.json`` and ``model.safetensors`` (bundled, a folder, or the Hugging Face
Hub cache), read them safely, and write them atomically.

Everything here fails with a :class:`ModelLoadError` that says what was wrong and how to fix it: a missing or
oversized config, unknown keys, an unreadable or mismatched weights file, or a Hub model that is not cached
while offline.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn
from typing_extensions import Self

from ..data.files import atomic_write
from .config import split_config
from .registry import BUNDLED_MODELS, RETIRED_MODELS, bundled_model_files, hub_reachable, list_models
from .settings import FLAT_NAMES, ModelSettings

__all__ = ["ModelLoadError", "SegFixHubMixin"]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 16
"""A SegFix ``config.json`` is a few hundred bytes; a larger one is refused before it is parsed."""


class ModelLoadError(ValueError):
    """A model folder, cache entry or file could not be loaded; the message says why and how to fix it."""


def model_files(name: str, **hub_kwargs: Any) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a bundled model name, a local folder, or a Hub repo id.

    ``hub_kwargs`` (``revision``, ``cache_dir``, ``force_download``, ``local_files_only``, ``token``) go to every
    Hub download. Without a route to the Hub the cache is read at once instead of retrying for half a minute.

    Raises:
        FileNotFoundError: ``name`` looks like a path that does not exist.
        ModelLoadError: a misspelt bundled name (with a suggestion), or a Hub file that cannot be had.
    """
    bundled = bundled_model_files(name)
    if bundled is not None:
        return bundled
    if name in BUNDLED_MODELS:
        raise ModelLoadError(
            f"the bundled model {name!r} is not part of this installation (files missing); reinstall segfix-pytorch"
        )
    if os.path.isdir(name):
        return Path(name) / CONFIG_NAME, Path(name) / WEIGHTS_NAME
    if _looks_like_path(name):
        raise FileNotFoundError(
            f"{name!r}: no such folder. Expected a folder written by SegFix.save_pretrained, "
            f"a bundled model {list_models()}, or a Hub repo id 'org/name'"
        )
    if name in RETIRED_MODELS:
        raise ModelLoadError(
            f"{name!r} is no longer bundled: {list_models()[0]!r} supersedes it (segfix models lists the bundled "
            f"ones); {RETIRED_MODELS[name]} in the segfix-pytorch repository gives the commands that reproduce it"
        )
    if "/" not in name and (guess := difflib.get_close_matches(name, list(BUNDLED_MODELS), n=1, cutoff=0.75)):
        raise ModelLoadError(
            f"{name!r} is not a bundled model; did you mean {guess[0]!r}? Bundled: {list_models()}; "
            "a Hub model is named 'org/name'"
        )
    if not hub_kwargs.get("local_files_only") and not hub_reachable():
        hub_kwargs = {**hub_kwargs, "local_files_only": True}
    return _hub_file(name, CONFIG_NAME, hub_kwargs), _hub_file(name, WEIGHTS_NAME, hub_kwargs)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """True unless ``name`` has the form of a Hub repo id (``name`` or ``org/name``)."""
    return _REPO_ID.match(name) is None or name.endswith((".json", ".safetensors"))


def _hub_file(repo_id: str, filename: str, kwargs: dict) -> Path:
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, **kwargs))
    except LocalEntryNotFoundError as error:
        raise ModelLoadError(
            f"{repo_id}/{filename} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline, HF_HUB_OFFLINE=1 or local_files_only=True). Run once with network access to cache it, pass "
            f"cache_dir= where it is cached, load a folder written by save_pretrained, or use a bundled model "
            f"{list_models()}"
        ) from error
    except EntryNotFoundError as error:
        what = "config.json" if filename == CONFIG_NAME else filename
        raise ModelLoadError(
            f"{repo_id}: the repo has no {what}; is it a SegFix model saved with save_pretrained?"
        ) from error
    except RevisionNotFoundError as error:
        raise ModelLoadError(f"{repo_id}: revision {kwargs.get('revision')!r} does not exist") from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"{repo_id}: no such model on the Hub (or it is private: pass token=). Bundled models: {list_models()}"
        ) from error


def load_weights(module: nn.Module, weights_file: Path, *, strict: bool = True) -> torch.dtype | None:
    """Load a safetensors file into ``module``; returns the floating dtype its tensors were stored in (None
    when mixed).

    Raises:
        ModelLoadError: a missing, truncated or corrupt file; with ``strict``, missing or unexpected keys;
            tensor shapes that do not match (always).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(weights_file).is_file():
        raise ModelLoadError(f"{weights_file}: model.safetensors is missing")
    try:
        state = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"{weights_file}: not a valid safetensors file ({error}); it may be truncated or "
            "corrupt: download it again (force_download=True) or re-save the model"
        ) from error
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise ModelLoadError(
            f"{weights_file}: weights do not match the config; missing keys {_some(missing)}, "
            f"unexpected keys {_some(unexpected)}"
        )
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if wrong:
        raise ModelLoadError(f"{weights_file}: tensor shapes do not match the config: {wrong[:5]}")
    if missing or unexpected:
        _logger.warning("non-strict load of %s: missing %s, unexpected %s", weights_file, missing, unexpected)
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    stored = {v.dtype for v in state.values() if v.is_floating_point()}
    return stored.pop() if len(stored) == 1 else None


def _some(keys: list[str]) -> str:
    return f"{keys[:10]}{' ...' if len(keys) > 10 else ''}"


def save_weights(
    state: Mapping[str, torch.Tensor], folder: Path, config: Mapping[str, Any], *, dtype: torch.dtype | None = None
) -> None:
    """Write ``model.safetensors`` (floating tensors cast to ``dtype`` when given) and ``config.json`` into
    ``folder``, each atomically."""
    from safetensors.torch import save_file

    def stored(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().contiguous().cpu()
        return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    tensors = {k: stored(v) for k, v in state.items()}
    folder = Path(folder)
    atomic_write(
        folder / WEIGHTS_NAME,
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "library": "segfix"}),
    )
    text = json.dumps(config, sort_keys=True, indent=2)
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(text))


MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# SegFix offset predictor

A [SegFix](https://arxiv.org/abs/2007.04269) boundary/direction network saved with the
[`segfix-pytorch`](https://pypi.org/project/segfix-pytorch/) library. Load it and refine any segmentation:

```python
from segfix import SegFix
model = SegFix.from_pretrained("{{ repo_id | default('path/to/model', true) }}")
refined = model.refine(image, label_map)
```
"""
"""The card ``save_pretrained`` writes for a model that was not loaded with one of its own."""


class SegFixHubMixin(PyTorchModelHubMixin):
    """Hugging Face Hub I/O for :class:`segfix.SegFix`: ``from_pretrained`` (bundled names, folders, Hub repos,
    strictly and offline-aware), ``save_pretrained`` (weights and the nested ``config.json``, atomically) and
    the model card. A subclass names its network arguments in ``network_arguments`` and keeps its settings in
    ``settings`` (:class:`segfix.hub.settings.ModelSettings`)."""

    network_arguments: ClassVar[tuple[str, ...]] = ()
    weights_dtype: torch.dtype | None
    source_card: str | None

    @property
    def config(self) -> dict:  # pragma: no cover - defined by the model
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        device: str | torch.device | None = None,
        map_location: str | torch.device | None = None,
        strict: bool = True,
        proxies: dict | None = None,
        **overrides: Any,
    ) -> Self:
        """Load a model from a bundled short name, a local folder, or a Hugging Face Hub repo id.

        Args:
            pretrained_model_name_or_path: a name from :func:`segfix.list_models`, a folder written by
                :meth:`save_pretrained`, or a Hub repo id (``"org/name"``).
            revision: the Hub revision (branch, tag or commit) to load; passed to every Hub download.
            cache_dir: the Hub cache folder, as huggingface_hub takes it.
            force_download: download again even where the cache holds the files.
            local_files_only: read the cache only, never the network.
            token: the Hub token for private repos.
            device: where to put the model (default CPU); ``map_location`` is the Hub mixin's name for it.
            strict: refuse missing or unexpected weights (default True).
            proxies: refused with a hint: this huggingface_hub reads ``HTTP(S)_PROXY`` from the environment.
            overrides: settings or network arguments to change, e.g. ``inference="sliding"``.

        Returns:
            The model in eval mode. The backbone is built from the saved weights; nothing else is downloaded.

        Raises:
            ModelLoadError: missing or invalid ``config.json``, unreadable or mismatched weights, or a Hub model
                that is not cached while offline; the message says how to fix it.
            FileNotFoundError: a path that does not exist.
        """
        device = _one_device(device, map_location)
        if proxies:
            raise ValueError(
                "proxies: this huggingface_hub reads proxies from the HTTP_PROXY / HTTPS_PROXY environment "
                "variables; set those instead"
            )
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            raise TypeError(
                "pretrained_model_name_or_path: expected a bundled model name, a folder or a Hub repo id (str or "
                f"path), got {pretrained_model_name_or_path!r}"
            )
        hub = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, token=token)
        config_file, weights_file = model_files(
            os.fspath(pretrained_model_name_or_path), local_files_only=local_files_only, **hub
        )
        model = cls._from_config_file(config_file, overrides)
        model.weights_dtype = load_weights(model, weights_file, strict=strict)
        model.source_card = _readable_card(Path(config_file).with_name("README.md"))
        if device is not None:
            model.to(device)
        return model.eval()

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The card of the model this one was loaded from (its licence and results stay with its weights),
        else the library's template."""
        if self.source_card is not None:
            from huggingface_hub import ModelCard

            return ModelCard(self.source_card)
        return super().generate_model_card(*args, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        # config.json too, from the current settings: the mixin writes its own only where this did not
        save_weights(self.state_dict(), Path(save_directory), self.config, dtype=self.weights_dtype)  # type: ignore[attr-defined]

    @classmethod
    def _from_config_file(cls, config_file: Path, overrides: Mapping[str, Any]) -> Any:
        network, settings = read_config(config_file, cls.network_arguments)
        bad = sorted(set(overrides) - set(cls.network_arguments) - set(FLAT_NAMES))
        if bad:
            known = sorted({*cls.network_arguments, *FLAT_NAMES})
            raise TypeError(f"from_pretrained: unknown override(s) {bad}; config keys are {known}")
        network_overrides = {k: v for k, v in overrides.items() if k in cls.network_arguments}
        try:
            settings = settings.replace(**{k: v for k, v in overrides.items() if k not in network_overrides})
            return cls(**{**network, **network_overrides}, **settings.groups())
        except (TypeError, ValueError) as error:
            raise ModelLoadError(f"{config_file}: invalid config ({error})") from error


def _readable_card(card: Path) -> str | None:
    """The text of a model folder's ``README.md`` when it is a card that can be saved again (UTF-8, with YAML
    front matter that parses); None, with a warning, for one that cannot: a card is metadata, and a broken one
    must neither stop the model from loading nor fail a later ``save_pretrained``."""
    if not card.is_file():
        return None
    try:
        text = card.read_bytes().decode("utf-8")
        from huggingface_hub import ModelCard

        ModelCard(text).data.to_yaml()  # parses and writes back the front matter, as saving will
    except Exception as error:  # noqa: BLE001 - yaml, unicode and huggingface_hub errors alike mean "no card"
        reason = " ".join(str(error).split())
        _logger.warning("%s: not a readable model card (%s); it is not kept for save_pretrained", card, reason)
        return None
    return text


def _one_device(device: Any, map_location: Any) -> Any:
    if map_location is None:
        return device
    if device is not None and torch.device(device) != torch.device(map_location):
        raise ValueError(f"device={device!r} and map_location={map_location!r} disagree; give one of them")
    return map_location


def read_config(config_file: Path, network_keys: Iterable[str]) -> tuple[dict[str, Any], ModelSettings]:
    """Read a ``config.json`` (nested or the older flat form) -> (network arguments, settings groups).

    Args:
        config_file: the file.
        network_keys: the network arguments this version knows (others are refused, by name).

    Raises:
        ModelLoadError: missing, oversized, unreadable or not an object; unknown keys; invalid values.
    """
    config_file = Path(config_file)
    if not config_file.is_file():
        raise ModelLoadError(
            f"{config_file}: config.json is missing; a SegFix model folder holds config.json "
            "and model.safetensors (write one with SegFix.save_pretrained)"
        )
    size = config_file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{config_file}: {size} bytes; a SegFix config.json is a few hundred bytes")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ModelLoadError(f"{config_file}: not a readable JSON config ({reason})") from error
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    try:
        network, groups = split_config(config)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"{config_file}: invalid config ({error})") from error
    known = set(network_keys)
    unknown = sorted(set(network) - known)
    if unknown:
        raise ModelLoadError(
            f"{config_file}: unknown config key(s) {unknown}; this segfix version knows {sorted(known)}"
        )
    return network, groups
