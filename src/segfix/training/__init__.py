"""Training: ImageNet initialisation of the backbone (``imagenet``), losses, recipes (data), the training loop,
and tuning the decision settings on held-out data (``tuning``; ``policy`` says which settings are tuned)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .imagenet import init_backbone, load_imagenet_backbone
    from .losses import SegFixLoss, segfix_loss
    from .policy import tune_and_save
    from .recipes import RECIPE_CHAINS, RECIPES, RecipeChain, TrainRecipe
    from .train import train, train_chain
    from .tuning import select_settings

__all__ = [
    "RECIPES",
    "RECIPE_CHAINS",
    "RecipeChain",
    "SegFixLoss",
    "TrainRecipe",
    "init_backbone",
    "load_imagenet_backbone",
    "segfix_loss",
    "select_settings",
    "train",
    "train_chain",
    "tune_and_save",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "RECIPES": "recipes",
        "RECIPE_CHAINS": "recipes",
        "RecipeChain": "recipes",
        "SegFixLoss": "losses",
        "TrainRecipe": "recipes",
        "init_backbone": "imagenet",
        "load_imagenet_backbone": "imagenet",
        "segfix_loss": "losses",
        "select_settings": "tuning",
        "train": "train",
        "train_chain": "train",
        "tune_and_save": "policy",
    },
)
