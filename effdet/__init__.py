"""effdet: EfficientDet D0..D7x object detection in PyTorch.

The public names below load on first use (PEP 562), so that ``import effdet`` and the ``effdet``
command's ``--help`` answer without importing PyTorch first.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EfficientDetConfig": "effdet.config", "get_config": "effdet.config", "model_names": "effdet.config",
    "create_model": "effdet.factory", "load_model": "effdet.factory", "create_classifier": "effdet.factory",
    "EfficientDet": "effdet.modeling.efficientdet", "build_model": "effdet.modeling.efficientdet",
    "count_parameters": "effdet.modeling.efficientdet",
    "train": "effdet.engine.trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'effdet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [*sorted(_EXPORTS), "__version__"]
