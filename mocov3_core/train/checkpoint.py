"""Atomic checkpoints: one dict holding everything a resumed run needs to continue the same curve.

Keys: run_id, step, seq (the event counter), config, model (both encoders and the predictor),
optimizer, scaler, rng (torch CPU/CUDA), lr_scale (after rollbacks), monitor state, kNN queue, healthy.
The data order and the augmentation are functions of (seed, step), so the step is the data state.
A file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.

Checkpoints load with torch.load(weights_only=True): a file that would import anything beyond tensors,
numbers, strings, lists and dicts (a crafted pickle whose __reduce__ runs a command) is refused before any of
it runs. Everything the engine saves is of those types (config dumps, RNG states as tensors, the monitor's
lists), and `save_checkpoint` checks it, so every checkpoint it ever wrote loads this way with no allow-list.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: unsafe (UnsafeCheckpointError) or damaged (CorruptCheckpointError)."""


class UnsafeCheckpointError(CheckpointError):
    """The file would import Python objects beyond weights: refused before anything in it runs."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, empty or not a torch checkpoint."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(plain(state), tmp)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
    if unsafe:  # a state a weights_only load would refuse: fail here, not at the resume that needs it
        tmp.unlink()
        raise TypeError(f"checkpoint state holds {', '.join(unsafe)}: convert it to tensors, numbers, strings, "
                        "lists or dicts before saving")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def plain(value: Any) -> Any:
    """`value` with the types a weights_only load refuses converted: numpy arrays and scalars to tensors and
    numbers, paths to strings. A container with nothing to convert is returned as it is (a state_dict keeps
    its OrderedDict and _metadata)."""
    if isinstance(value, dict):
        items = {k: plain(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list | tuple):
        seq = [plain(v) for v in value]
        return value if all(a is b for a, b in zip(seq, value, strict=True)) else type(value)(seq)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    return value


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: the new directory entry survives a power cut)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run directory or its checkpoints folder: take the latest
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise UnsafeCheckpointError(f"{path}: refused, it would import {', '.join(unsafe)}; a checkpoint holds "
                                        "only tensors, numbers, strings, lists and dicts") from None
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:  # truncated zip, empty file, bad header
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a damaged file: the caller reports it as corrupt
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def checkpoint_dir(path: Path) -> Path:
    return path if path.name == "checkpoints" else path / "checkpoints"


INDEX, PREV_INDEX = "index.json", "index.prev.json"
CHECKPOINT_NAME = re.compile(r"step_(\d+)\.pt")


def read_index(ckpt_dir: Path) -> list[dict[str, Any]]:
    return load_index(ckpt_dir)[0]


def load_index(ckpt_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The checkpoints listed in the index whose files exist, oldest first -> (entries, problem).

    A damaged index (garbage, a half-written file from before writes were atomic) is not fatal: the previous
    index (kept by write_index) is used instead, and checkpoint files it does not list are added from their
    names (health and seq unknown: not healthy, and counted as delivered). `problem` then says what happened.
    """
    index = ckpt_dir / INDEX
    if not index.exists():
        return [], None
    entries = _parse_index(index)
    problem = None
    if entries is None:
        problem = f"checkpoint index {index} is unreadable"
        entries = _parse_index(ckpt_dir / PREV_INDEX) or []
        listed = {e["file"] for e in entries}
        entries += [{"file": f.name, "step": int(m.group(1)), "healthy": False}
                    for f in sorted(ckpt_dir.glob("step_*.pt"))
                    if (m := CHECKPOINT_NAME.fullmatch(f.name)) and f.name not in listed]
    present = [e for e in entries if (ckpt_dir / e["file"]).is_file()]
    return sorted(present, key=lambda e: e["step"]), problem


def _parse_index(path: Path) -> list[dict[str, Any]] | None:
    """The entries of an index file, or None when it is missing or not a list of {file, step, ...}."""
    try:
        entries = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and CHECKPOINT_NAME.fullmatch(e["file"])
            and isinstance(e.get("step"), int) for e in entries):
        return None
    return entries


def write_index(ckpt_dir: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the index atomically (temp file, fsync, rename, fsync of the folder), keeping the one it
    replaces as index.prev.json for load_index to fall back on."""
    index = ckpt_dir / INDEX
    if _parse_index(index) is not None:
        _write_atomic(ckpt_dir / PREV_INDEX, index.read_bytes())
    _write_atomic(index, json.dumps(entries, indent=1).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
