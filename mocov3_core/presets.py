"""Named presets: small overrides on the defaults of `config.py` (nanoGPT's config/ files).

Layering: defaults -> preset -> `--set key=value`. The paper's recipes need an ImageNet-style
ImageFolder (`--set data.root=/path/to/imagenet`); the fmnist_* presets train on this machine's CPU.
"""

from __future__ import annotations

import copy
from typing import Any

from .config import (
    CONFIG_TYPES,
    ConfigError,
    FinetuneConfig,
    KnnConfig,
    LinearConfig,
    PrepareConfig,
    PretrainConfig,
    merge,
    parse_value,
    set_path,
    validate_spec,
)

_IMAGENET = {"dataset": "imagefolder", "crop_size": 224, "num_workers": 10}

# A CPU-sized MoCo v3 for 28x28 Fashion-MNIST: patch 7 (16 tokens), narrow heads (1024 -> 128).
_FMNIST = {
    "model": {"arch": "vit_mini_p7"},
    "moco": {"mlp_dim": 1024, "dim": 128},
    "data": {"dataset": "fashion_mnist", "crop_size": 28},
    "augment": {"crop_min": 0.2},
    "optim": {"batch_size": 256, "base_lr": 1e-3, "epochs": 3, "warmup_epochs": 0.5},
    "train": {"log_every": 5, "ckpt_every": 200},
    "monitor": {"warmup_steps": 40, "window": 60, "knn_every": 50, "knn_queue": 4096, "knn_eval_samples": 1000},
}

PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Paper Table 1 / official CONFIG.md: ViT-S/16 and ViT-B/16, 300 epochs, batch 4096, AdamW 1.5e-4 x B/256,
    # wd 0.1, 40 warmup epochs, τ 0.2, m 0.99 -> 1, random patch projection. Linear: 73.2 (S), 76.7 (B).
    "vit_small_300ep": {"model": {"arch": "vit_small_p16"}, "data": _IMAGENET},
    "vit_base_300ep": {"model": {"arch": "vit_base_p16"}, "data": _IMAGENET},
    # Official ResNet-50 recipe (main_moco.py defaults): LARS lr 0.6, wd 1e-6, 10 warmup epochs, τ 1.0,
    # crop-min 0.2, 2-layer projector, predictor without final BN. Linear: 68.9 (100 ep).
    "resnet50_100ep": {
        "model": {"arch": "resnet50"},
        "moco": {"temperature": 1.0},
        "data": _IMAGENET,
        "augment": {"crop_min": 0.2},
        "optim": {"name": "lars", "base_lr": 0.6, "weight_decay": 1e-6, "epochs": 100, "warmup_epochs": 10},
    },
    # The CPU demo: Fashion-MNIST from Debian's dataset-fashion-mnist, minutes on two cores.
    "fmnist_small": _FMNIST,
    # The smallest real run, for tests and the service's smoke checks: 2048 images, a 2-block ViT.
    "fmnist_tiny": merge(_FMNIST, {
        "model": {"arch": "vit_micro_p7"},
        "moco": {"mlp_dim": 256, "dim": 64},
        "data": {"limit": 2048},
        "optim": {"batch_size": 64, "epochs": 2, "warmup_epochs": 0.5},
        "train": {"log_every": 1, "ckpt_every": 16},
        "monitor": {"warmup_steps": 10, "window": 30, "knn_every": 16, "knn_queue": 1024, "knn_eval_samples": 500},
    }),
}
# fmnist_tiny with a non-finite gradient injected at step 12 and the stop policy: the NaN alert demo.
PRETRAIN_PRESETS["fmnist_tiny_nan"] = merge(PRETRAIN_PRESETS["fmnist_tiny"], {
    "faults": {"nan_grad_at_step": 12}, "monitor": {"policy": "stop"}})

# The paper's instability (§4, Figs. 4-5) on this machine's CPU (docs/results.md, "The paper's instability, caught
# for real"): fmnist_small with a learned patch projection at a 10x larger lr and a short warmup spikes first in
# grad_norm/patch_proj, then dips in the kNN monitor. The lr stays near its peak: 300 steps of a 3-epoch cosine.
# Metrics every step and a kNN check every 20 steps, so the spike and the dip are seen where they happen. One
# thread: the same digits on any machine, and a CPU shared with other work does not stall a two-thread barrier.
PRETRAIN_PRESETS["fmnist_unstable"] = merge(_FMNIST, {
    "model": {"stop_grad_patch_proj": False},
    "optim": {"base_lr": 1e-2, "warmup_epochs": 0.2},
    "train": {"max_steps": 300, "log_every": 1, "ckpt_every": 50, "threads": 1},
    "monitor": {"knn_every": 20},
})
# The same run, seed and all, with the paper's fix: a frozen random patch projection (the only difference). On this
# machine it does not remove the instability: the spike moves to the middle blocks and the kNN dip stays.
PRETRAIN_PRESETS["fmnist_unstable_frozen"] = merge(PRETRAIN_PRESETS["fmnist_unstable"], {
    "model": {"stop_grad_patch_proj": True}})

# The paper's comparison (§6.1, Table 4) at CPU size: each framework on the same backbone, data, heads (the moco
# section's sizes) and schedule as fmnist_small / fmnist_tiny. Only the framework's own settings differ: SwAV gets
# fewer prototypes than its 3000 (10 classes, batches of 64-256) and a shorter prototype freeze than its one epoch.
_FMNIST_FRAMEWORKS: dict[str, dict[str, Any]] = {
    "simclr": {"framework": "simclr"},
    "byol": {"framework": "byol"},
    "swav": {"framework": "swav", "swav": {"num_prototypes": 100, "freeze_prototypes_epochs": 0.25}},
}
for _fw, _over in _FMNIST_FRAMEWORKS.items():
    PRETRAIN_PRESETS[f"fmnist_small_{_fw}"] = merge(PRETRAIN_PRESETS["fmnist_small"], copy.deepcopy(_over))
    PRETRAIN_PRESETS[f"fmnist_tiny_{_fw}"] = merge(PRETRAIN_PRESETS["fmnist_tiny"], copy.deepcopy(_over))
PRETRAIN_PRESETS["fmnist_tiny_swav"] = merge(PRETRAIN_PRESETS["fmnist_tiny_swav"], {"swav": {"num_prototypes": 30}})


def list_presets() -> list[str]:
    return sorted(PRETRAIN_PRESETS)


def build_spec(kind: str, preset: str | None = None, overrides: list[str] | dict[str, Any] | None = None,
               base: dict[str, Any] | None = None
               ) -> PretrainConfig | KnnConfig | LinearConfig | FinetuneConfig | PrepareConfig:
    """defaults -> preset -> base dict -> overrides ('a.b=v' strings or {dotted: value}) -> validated spec."""
    tree: dict[str, Any] = {}
    if preset is not None:
        if kind != "pretrain":
            raise ConfigError("preset", f"presets are for pretraining; got kind {kind!r}")
        if preset not in PRETRAIN_PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; known: {', '.join(list_presets())}")
        tree = copy.deepcopy(PRETRAIN_PRESETS[preset])
    if base:
        tree = merge(tree, copy.deepcopy(base))
    model = CONFIG_TYPES.get(kind)
    if model is None:
        raise ConfigError("kind", f"unknown run kind {kind!r}; one of {', '.join(CONFIG_TYPES)}")
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    for key, value in items:
        set_path(tree, key, value, model)
    return validate_spec(kind, tree)


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(item, "expected key=value, e.g. optim.base_lr=3e-4")
    key, _, value = item.partition("=")
    return key.strip(), parse_value(value.strip())
