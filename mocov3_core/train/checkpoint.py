"""Atomic checkpoints: one dict holding everything a resumed run needs to continue the same curve.

Keys: run_id, step, seq (the event counter), config, model (both encoders and the predictor),
optimizer, scaler, rng (torch CPU/CUDA), lr_scale (after rollbacks), monitor state, kNN queue, healthy.
The data order and the augmentation are functions of (seed, step), so the step is the data state.
A file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run directory or its checkpoints folder: take the latest
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = latest
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def checkpoint_dir(path: Path) -> Path:
    return path if path.name == "checkpoints" else path / "checkpoints"


def read_index(ckpt_dir: Path) -> list[dict[str, Any]]:
    index = ckpt_dir / "index.json"
    if not index.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(index.read_text())
    return [e for e in entries if (ckpt_dir / e["file"]).exists()]


def write_index(ckpt_dir: Path, entries: list[dict[str, Any]]) -> None:
    tmp = ckpt_dir / "index.json.tmp"
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, ckpt_dir / "index.json")


def latest_checkpoint(path: Path) -> Path | None:
    ckpt_dir = checkpoint_dir(path)
    entries = read_index(ckpt_dir)
    return ckpt_dir / max(entries, key=lambda e: e["step"])["file"] if entries else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    # a checkpoint loaded with map_location=cuda carries its RNG states on the GPU; both setters take CPU bytes
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def backbone_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query encoder's backbone weights out of a MoCo state dict (heads and momentum encoder dropped)."""
    prefix = "base.backbone."
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


def load_backbone(path: str | Path, drop_path_rate: float = 0.0, random_init: bool = False,
                  map_location: str | torch.device = "cpu") -> tuple[nn.Module, Any, dict[str, Any]]:
    """Rebuild the pretrained backbone from a checkpoint -> (backbone, PretrainConfig, checkpoint meta)."""
    from ..config import PretrainConfig
    from ..models import build_backbone, wrap_batchnorms

    ckpt = load_checkpoint(path, map_location)
    cfg = PretrainConfig.model_validate(ckpt["config"])
    model_cfg = cfg.model.model_copy(update={"drop_path_rate": drop_path_rate})
    backbone = wrap_batchnorms(build_backbone(model_cfg, cfg.data.crop_size))
    if not random_init:
        missing, unexpected = backbone.load_state_dict(backbone_state(ckpt["model"]), strict=False)
        assert not missing and not unexpected, f"backbone keys differ: missing {missing}, unexpected {unexpected}"
    meta = {"run_id": ckpt.get("run_id"), "step": ckpt.get("step"), "path": str(path)}
    return backbone, cfg, meta
