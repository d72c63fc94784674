"""mocov3_core: MoCo v3 pretraining and evaluation of Vision Transformers (Chen, Xie, He, ICCV 2021).

The config types, presets and event schema import without torch (the server validates specs with them);
`build_model`, `pretrain` and `evaluate` load torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import (
    ConfigError,
    FinetuneConfig,
    KnnConfig,
    LinearConfig,
    PretrainConfig,
    json_schema,
    validate_spec,
)
from .events import ConsoleSink, Emitter, Event, EventSink, JsonlSink, ListSink
from .presets import build_spec, list_presets

if TYPE_CHECKING:
    from .eval import evaluate
    from .frameworks import MoCo as build_model
    from .train import pretrain

__all__ = ["ConfigError", "ConsoleSink", "Emitter", "Event", "EventSink", "FinetuneConfig", "JsonlSink", "KnnConfig",
           "LinearConfig", "ListSink", "PretrainConfig", "build_model", "build_spec", "evaluate", "json_schema",
           "list_presets", "pretrain", "validate_spec"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # lazy: keep `import mocov3_core` free of torch
    if name == "pretrain":
        from .train import pretrain

        return pretrain
    if name == "evaluate":
        from .eval import evaluate

        return evaluate
    if name == "build_model":
        from .frameworks import MoCo

        return MoCo
    raise AttributeError(f"module 'mocov3_core' has no attribute {name!r}")
