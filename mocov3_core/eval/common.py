"""What every evaluation shares: the backbone to evaluate, the data, and frozen-feature extraction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import DataConfig, FinetuneConfig, KnnConfig, LinearConfig
from ..data import (
    AnySet,
    ArraySet,
    crop_flip,
    derive_seed,
    eval_batches,
    load_dataset,
    normalize,
    random_resized_crop,
    to_unit_float,
)
from ..events import Emitter, EventSink
from ..models import build_backbone, wrap_batchnorms
from ..system import autocast as make_autocast
from ..system import pin_threads, resolve_device, resolve_precision, set_tf32
from ..train.checkpoint import load_backbone

AnyEval = KnnConfig | LinearConfig | FinetuneConfig


@dataclass
class EvalSetup:
    backbone: nn.Module | None  # None = raw pixels
    data_cfg: DataConfig
    train: AnySet
    test: AnySet
    device: torch.device
    autocast: AbstractContextManager[Any]
    emitter: Emitter
    source: dict[str, Any]  # what is evaluated: checkpoint path, run id, step, random init

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def inherit_data(cfg: AnyEval, pretrained: DataConfig) -> DataConfig:
    """The evaluation's data: the data the checkpoint was pretrained on (in full), except the fields the
    evaluation's spec changed from their defaults. A spec that arrives as a full dump (the service sends
    one) has every field set, so 'changed' means: differs from both DataConfig's and the evaluation's
    default. The crop size always follows the checkpoint: the ViT's position embedding is fixed to it."""
    if "data" not in cfg.model_fields_set:
        return pretrained.model_copy(update={"limit": None})
    plain = DataConfig()
    own = type(cfg).model_fields["data"].get_default(call_default_factory=True)
    update: dict[str, Any] = {"limit": cfg.data.limit}
    for name in DataConfig.model_fields:
        value = getattr(cfg.data, name)
        if name not in ("limit", "crop_size") and value != getattr(plain, name) and value != getattr(own, name):
            update[name] = value
    return pretrained.model_copy(update=update)


def setup(cfg: AnyEval, sinks: list[EventSink] | None, run_id: str | None, drop_path_rate: float = 0.0,
          need_backbone: bool = True, first_seq: int = 0) -> EvalSetup:
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    if device.type == "cuda":  # as pretraining: fp32 matmuls on TF32 tensor cores unless fp32-strict
        set_tf32(precision != "fp32-strict")
    autocast = make_autocast(precision, device)
    torch.manual_seed(cfg.train.seed)
    threads = pin_threads(cfg.train.threads)
    data_cfg = cfg.data
    backbone: nn.Module | None = None
    source: dict[str, Any] = {"random_init": cfg.random_init, "threads": threads}  # threads: what the digits need
    if need_backbone:
        if cfg.checkpoint:
            backbone, pre_cfg, meta = load_backbone(cfg.checkpoint, drop_path_rate, cfg.random_init)
            source.update(checkpoint=meta["path"], pretrain_run_id=meta["run_id"], pretrain_step=meta["step"],
                          arch=pre_cfg.model.arch)
            data_cfg = inherit_data(cfg, pre_cfg.data)
        elif cfg.model is not None:
            model_cfg = cfg.model.model_copy(update={"drop_path_rate": drop_path_rate})
            backbone = wrap_batchnorms(build_backbone(model_cfg, data_cfg.crop_size))
            source.update(random_init=True, arch=cfg.model.arch)
        else:
            raise ValueError("checkpoint: give a pretraining checkpoint, or a model for a randomly initialised one")
        backbone = backbone.to(device)
    else:
        source["features"] = "pixels"
    emitter = Emitter(run_id or uuid.uuid4().hex[:12], sinks or [], seq=first_seq)
    return EvalSetup(backbone, data_cfg, load_dataset(data_cfg, train=True), load_dataset(data_cfg, train=False),
                     device, autocast, emitter, source)


@torch.no_grad()
def train_crops(dataset: AnySet, indices: torch.Tensor, crop_size: int, crop_min: float,
                device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's and fine-tuning's training transform on images `indices` -> (normalised [B, 3, S, S], labels).

    RandomResizedCrop(scale=(crop_min, 1)) + horizontal flip drawn from each WHOLE image, as official
    main_lincls.py does (transforms.RandomResizedCrop(224) on the decoded ImageNet image, then
    RandomHorizontalFlip); evaluation alone resizes to 256 and centre-crops 224. In-memory sets (one
    image size) crop on the device; image folders crop each decoded file on the CPU, its generator
    seeded from `generator` (on `device`)."""
    mean, std = dataset.mean, dataset.std
    if isinstance(dataset, ArraySet):
        images = dataset.images[indices].permute(0, 3, 1, 2).to(device)
        return crop_flip(images, crop_size, crop_min, generator, mean, std), dataset.labels[indices].to(device)
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    crops = [random_resized_crop(dataset.load(int(i)), crop_size, crop_min, 0.5,
                                 torch.Generator().manual_seed(derive_seed(seed, k)))
             for k, i in enumerate(indices.tolist())]
    x = normalize(to_unit_float(torch.stack(crops).to(device)), mean, std)
    return x, dataset.labels[indices].to(device)


def epoch_batches(n: int, batch_size: int) -> list[slice]:
    """One epoch's batches over a permutation of n images, the last one partial (main_lincls.py's DataLoader
    keeps it: drop_last is False)."""
    return [slice(start, start + batch_size) for start in range(0, n, batch_size)]


@torch.no_grad()
def extract(setup: EvalSetup, dataset: AnySet, batch_size: int,
            progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features [N, D] (backbone in eval mode; raw normalised pixels when there is no backbone)."""
    size = setup.data_cfg.crop_size
    feats, labels = [], []
    if setup.backbone is not None:
        setup.backbone.eval()
    for x, y in eval_batches(dataset, batch_size, size, setup.device, setup.data_cfg.num_workers,
                             setup.data_cfg.decode):
        if setup.backbone is None:
            f = x.flatten(1)
        else:
            with setup.autocast:
                f = setup.backbone.features(x)  # type: ignore[operator]
        feats.append(f.float())
        labels.append(y)
        if progress:
            progress(len(y))
    return torch.cat(feats), torch.cat(labels)
