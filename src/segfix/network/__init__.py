"""The network modules, and nothing around them: :class:`SegFixNet` (a timm backbone, a decoder and the two heads;
``segfix_net``), batch norms folded for inference (``folding``) and the precision the network computes in
(``precision``). Loading, settings and refinement live in :mod:`segfix.hub` and :mod:`segfix.prediction`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .folding import fold_batchnorm
    from .segfix_net import SegFixNet, create_backbone

__all__ = ["SegFixNet", "create_backbone", "fold_batchnorm"]

__getattr__ = lazy_getattr(
    __name__, {"SegFixNet": "segfix_net", "create_backbone": "segfix_net", "fold_batchnorm": "folding"}
)
