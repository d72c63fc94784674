"""Self-supervised pretraining (MoCo v3, SimCLR, BYOL or SwAV): setup in labelled stages, then one loop over
global steps.

Per step (docs/method.md §1.2 pseudocode): look up lr and, for frameworks with a momentum encoder, m; build both
views on the device; the framework's forward of the 2B crops and its loss (`frameworks/_base.py` is the
interface: MoCo v3's symmetrised 2τ-scaled contrastive loss by default); backward; the framework's
after-backward hook; per-layer gradient norms and a non-finite flag computed on the device; the optimizer
step, skipped on the device when a gradient is non-finite; the momentum update. Metrics stay on the device
and are read back every `train.log_every` steps (one host sync per interval); the stability monitor then
looks at each step in order and the run's policy acts on its alerts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PretrainConfig
from ..data import TrainStream, TwoViewAugment, eval_batches, load_dataset
from ..events import Emitter, EventSink
from ..frameworks import Encoder, Framework, build_framework
from ..knn import weighted_knn
from ..monitor import Alert, StabilityMonitor
from ..system import autocast, pin_threads, resolve_device, resolve_precision, set_tf32
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_index,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_index,
)
from .distributed import DistInfo, all_reduce_mean, any_rank, init_distributed, peer_lost, shutdown_distributed
from .flops import achieved, current_peak, step_flops
from .optim import build_optimizer, supports_found_inf
from .schedules import learning_rate, momentum, scaled_lr
from .signals import UPDATE_KEYS, UpdateRatios, attention_entropy, feat_std, rankme

METRIC_KEYS = ("loss", "grad_norm", "grad_norm/patch_proj", "grad_norm/first_block", "grad_norm/last_block",
               "grad_norm/projector", "grad_norm/predictor", "nonfinite", *UPDATE_KEYS)
GROUPS = ("patch_proj", "first_block", "last_block", "projector", "predictor")


@dataclass
class PretrainResult:
    run_id: str
    status: str  # succeeded | stopped | failed
    step: int
    checkpoint: str | None
    reason: str = ""
    last_values: dict[str, float] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    losses: dict[int, float] = field(default_factory=dict)


# Tests only: the torch.compile backend of train.compile (None = inductor, what runs use). tests/core sets
# "aot_eager" where inductor's C++ code generation would take minutes on a 2-core CPU; dynamo still traces every
# framework's encoders and AOTAutograd still builds their backward.
TEST_COMPILE_BACKEND: str | None = None


def compile_enabled(setting: str | bool, device: torch.device) -> bool:
    """train.compile on this device: "auto" compiles on CUDA only (on a CPU the compilation outlasts the gain)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def step_seed(seed: int, step: int) -> int:
    """The augmentation's seed for one step: a resumed run draws the same views (data order likewise)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


class GradNorms:
    """Per-group gradient L2 norms on the device, for the monitor (paper Fig. 4): no host sync."""

    def __init__(self, model: Framework) -> None:
        groups = {**model.backbone.layer_groups(), **model.head_groups()}  # type: ignore[operator]
        slot = {id(p): GROUPS.index(name) for name, params in groups.items() for p in params}
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slots = [slot.get(id(p), len(GROUPS)) for p in self.params]
        self._index: torch.Tensor | None = None
        self._present: tuple[bool, ...] = ()

    def __call__(self) -> torch.Tensor:
        """-> [1 + len(GROUPS)] tensor: global norm, then each group's norm (0 for frozen groups)."""
        present = tuple(p.grad is not None for p in self.params)
        grads = [p.grad for p in self.params if p.grad is not None]
        if present != self._present:  # built once, again only when a hook drops a grad (SwAV's frozen prototypes)
            self._present = present
            self._index = torch.tensor([s for s, has in zip(self.slots, present, strict=True) if has],
                                       device=grads[0].device)
        assert self._index is not None
        sq = torch.stack(torch._foreach_norm(grads)).float() ** 2
        per_group = torch.zeros(len(GROUPS) + 1, device=sq.device).index_add_(0, self._index, sq)
        return torch.cat([sq.sum().reshape(1), per_group[: len(GROUPS)]]).sqrt()


class KnnMonitor:
    """The paper's dense kNN monitor (§4, App. A): a FIFO queue of features of the augmented training
    batches (no extra forward), scored on held-out images every `knn_every` steps."""

    def __init__(self, size: int, dim: int, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 k: int, t: float) -> None:
        self.feats = torch.zeros(size, dim, device=images.device)
        self.labels = torch.zeros(size, dtype=torch.long, device=images.device)
        self.ptr, self.filled = 0, 0
        self.images, self.eval_labels, self.num_classes, self.k, self.t = images, labels, num_classes, k, t

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        n = min(feats.shape[0], self.feats.shape[0])
        idx = (torch.arange(n, device=feats.device) + self.ptr) % self.feats.shape[0]
        self.feats[idx] = feats[:n].float()
        self.labels[idx] = labels[:n]
        self.ptr = (self.ptr + n) % self.feats.shape[0]
        self.filled = min(self.filled + n, self.feats.shape[0])

    @torch.no_grad()
    def score(self, backbone: nn.Module, autocast: Any) -> dict[str, float]:
        """One evaluation of the held-out images -> {knn_top1 (once the queue holds k features), rankme, feat_std,
        attn_entropy/first_block, attn_entropy/last_block (ViT only)}: the signals come from the same forward,
        and are read back with the accuracy's own sync."""
        was_training = backbone.training
        backbone.eval()
        with attention_entropy(backbone) as entropy, autocast:
            test = torch.cat([backbone.features(x) for x in self.images.split(512)])  # type: ignore[operator]
        backbone.train(was_training)
        signals = {"rankme": rankme(test), "feat_std": feat_std(test)}
        for block, acc in (entropy or {}).items():
            signals[f"attn_entropy/{block}"] = acc[0] / acc[1].clamp_min(1.0)
        values = dict(zip(signals, torch.stack(list(signals.values())).cpu().tolist(), strict=True))
        if self.filled >= self.k:
            top1, _ = weighted_knn(self.feats[: self.filled], self.labels[: self.filled], test, self.eval_labels,
                                   self.num_classes, self.k, self.t)
            values = {"knn_top1": top1, **values}
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"feats": self.feats.cpu(), "labels": self.labels.cpu(), "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feats.copy_(state["feats"])
        self.labels.copy_(state["labels"])
        self.ptr, self.filled = state["ptr"], state["filled"]


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, out_dir: str | Path, sinks: list[EventSink] | None = None,
                 run_id: str | None = None, should_stop: Callable[[], bool] | None = None,
                 first_seq: int | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.should_stop = should_stop or (lambda: False)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.emitter = Emitter(self.run_id, sinks or [], seq=first_seq or 0)
        # a caller that knows the last seq it delivered numbers on from there (the worker); the checkpoint's
        # seq may be ahead of what was delivered when the process died, and using it would leave a gap
        self.seq_from_checkpoint = first_seq is None

        # ---- system
        self.device = resolve_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if not self.dist.is_main:  # one process speaks for the run
            self.emitter.sinks = []
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
            set_tf32(self.precision != "fp32-strict")
        self.autocast = autocast(self.precision, self.device)
        torch.manual_seed(cfg.train.seed)
        self.threads = pin_threads(cfg.train.threads)

        # ---- data
        gb = cfg.optim.batch_size
        assert gb % self.dist.world_size == 0, f"batch {gb} does not split over {self.dist.world_size} processes"
        self.dataset = load_dataset(cfg.data, train=True)
        outside = getattr(self.dataset, "skipped", None)
        if outside:
            self.emitter.emit("log", level="warning", message=f"{len(outside)} entries of {cfg.data.root} lead "
                              f"outside the dataset's folder and are not read, e.g. {min(outside)}")
        self.stream = TrainStream(self.dataset, gb // self.dist.world_size, cfg.train.seed, self.dist.rank,
                                  self.dist.world_size, self.device, crop_size=cfg.data.crop_size,
                                  crop_min=cfg.augment.crop_min, flip_p=cfg.augment.flip_p,
                                  num_workers=cfg.data.num_workers, decode=cfg.data.decode)
        # train.compile also fuses the augmentation's pointwise chains (on a GPU a tenth of an uncompiled step)
        self.compiled = compile_enabled(cfg.train.compile, self.device)
        self.augment = TwoViewAugment(cfg.augment, cfg.data.crop_size, self.dataset.mean, self.dataset.std,
                                      compile=self.compiled, compile_backend=TEST_COMPILE_BACKEND)
        self.gen = torch.Generator(device=self.device)
        self.ipe = self.stream.iters_per_epoch
        assert self.ipe > 0, f"dataset of {len(self.dataset.labels)} images is smaller than one batch of {gb}"
        self.total_steps = cfg.optim.epochs * self.ipe
        self.end_step = min(self.total_steps, cfg.train.max_steps or self.total_steps)

        # ---- encoders (cfg.framework's: the online encoder, its heads and any momentum target)
        model = build_framework(cfg).to(self.device)
        if self.compiled:
            # in place (nn.Module.compile): the parameters and the checkpoint keys stay those of the plain model
            for module in model.modules():
                if isinstance(module, Encoder):
                    module.compile(**({"backend": TEST_COMPILE_BACKEND} if TEST_COMPILE_BACKEND else {}))
        self.model = model
        self.ddp: nn.Module = model
        if self.dist.enabled:
            if self.device.type == "cuda":  # SyncBN runs on GPUs only; CPU (gloo) processes keep local BN statistics
                model_sync = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                assert model_sync is model
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.grad_norms = GradNorms(model)
        self.update_ratios = UpdateRatios({**model.backbone.layer_groups(), **model.head_groups()})  # type: ignore[operator]

        # ---- optimizer, schedules
        self.optimizer = build_optimizer(cfg.optim, model, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.peak_lr = scaled_lr(cfg.optim.base_lr, gb)
        self.lr_scale = 1.0

        # ---- model FLOPs per step, for achieved TFLOP/s and MFU next to images/s
        self.step_flops: int | None = None
        self.peak = current_peak(self.device, self.precision)
        if not self.dist.enabled:  # (the count runs the losses, which under DDP would gather meta tensors)
            try:
                with torch.random.fork_rng(devices=[]):
                    self.step_flops = step_flops(cfg, gb).total
            except Exception:  # noqa: BLE001  a figure for the charts: never a reason to fail the run
                self.step_flops = None

        # ---- monitor
        self.monitor = StabilityMonitor(cfg.monitor)
        self.knn: KnnMonitor | None = None
        if cfg.monitor.knn_every > 0:
            # a fixed held-out subset, the same images at every evaluation (so its noise does not look like a dip)
            test = load_dataset(cfg.data, train=False)
            n = min(cfg.monitor.knn_eval_samples, len(test.labels))
            pick = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))[:n]
            batches = list(eval_batches(test.subset(pick), 512, cfg.data.crop_size, self.device))
            images = torch.cat([x for x, _ in batches])
            self.knn = KnnMonitor(cfg.monitor.knn_queue, model.backbone.num_features, images,  # type: ignore[arg-type]
                                  torch.cat([y for _, y in batches]).to(self.device), len(self.dataset.classes),
                                  cfg.monitor.knn_k, cfg.monitor.knn_t)
        self.checkpoints: list[dict[str, Any]] = []
        self.alerts: list[Alert] = []
        self.losses: dict[int, float] = {}
        self.rollbacks = 0
        # data position = step + data_offset: the rollback policy's skip moves the stream past the batches around
        # a spike (the checkpoint keeps the offset, so a resume continues the same way)
        self.data_offset = 0
        self.faults_fired: set[str] = set()  # each injected fault fires once per run (kept in the checkpoint)
        self.restored = False  # a checkpoint of this run was restored (a fork then does not load its parent)
        self._resume_alerts: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ checkpoints
    def state(self, step: int, healthy: bool) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": step, "seq": self.emitter.seq, "config": self.cfg.model_dump(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng_state(),
                "lr_scale": self.lr_scale, "monitor": self.monitor.state_dict(), "healthy": healthy,
                "knn": self.knn.state_dict() if self.knn else None, "rollbacks": self.rollbacks,
                "data_offset": self.data_offset, "faults_fired": sorted(self.faults_fired)}

    def save(self, step: int) -> Path | None:
        if not self.dist.is_main:
            return None
        last = self.checkpoints[-1]["step"] if self.checkpoints else -1
        healthy = not any(last < a.step <= step for a in self.alerts)
        # the events of the steps before the checkpoint leave first (delivered, or on disk while the sinks'
        # service is away): a checkpoint must never be durable while the curve that led to it is not
        self.emitter.sync()
        path = save_checkpoint(self.ckpt_dir / f"step_{step:07d}.pt", self.state(step, healthy))
        self.checkpoints = [c for c in self.checkpoints if c["step"] != step]
        # seq: the number its "checkpoint" event gets, so a resume can tell whether what led up to it arrived
        self.checkpoints.append({"file": path.name, "step": step, "healthy": healthy, "seq": self.emitter.seq})
        self._prune()
        write_index(self.ckpt_dir, self.checkpoints)
        self.emitter.emit("checkpoint", step=step, path=str(path), healthy=healthy)
        return path

    def _prune(self) -> None:
        keep = {c["file"] for c in self.checkpoints[-self.cfg.train.keep_checkpoints:]}
        healthy = [c for c in self.checkpoints if c["healthy"]]
        if healthy:
            keep.add(healthy[-1]["file"])
        for c in self.checkpoints:
            if c["file"] not in keep:
                (self.ckpt_dir / c["file"]).unlink(missing_ok=True)
        self.checkpoints = [c for c in self.checkpoints if c["file"] in keep]

    def last_healthy(self, before_step: int) -> dict[str, Any] | None:
        found = [c for c in self.checkpoints if c["healthy"] and c["step"] < before_step]
        return found[-1] if found else None

    def restore(self, path: Path, keep_lr_scale: bool = False) -> int:
        ckpt = load_checkpoint(path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.data_offset = int(ckpt.get("data_offset", 0))
        if not keep_lr_scale:
            self.restored = True
            self.lr_scale = ckpt["lr_scale"]
            self.monitor.load_state_dict(ckpt["monitor"])
            self.rollbacks = ckpt.get("rollbacks", 0)
            self.faults_fired = set(ckpt.get("faults_fired", []))
            self.run_id = ckpt["run_id"]
            self.emitter.run_id = ckpt["run_id"]
            if self.seq_from_checkpoint:
                self.emitter.seq = max(self.emitter.seq, ckpt["seq"])
        if self.knn and ckpt.get("knn"):
            self.knn.load_state_dict(ckpt["knn"])
        return int(ckpt["step"])

    def resume(self, resume: str | Path | None, delivered_seq: int | None = None) -> int:
        """'auto' = this run directory's latest checkpoint if any; a path = that checkpoint; None = fresh.

        delivered_seq: the highest seq of this run its consumer is known to hold (the worker reads it from
        Redis). 'auto' then takes the latest checkpoint whose preceding events all arrived, and drops the
        later ones: resuming after a checkpoint whose last steps' metrics were lost with a killed process
        would leave a hole in the curve, while training those steps again replaces them point for point.
        """
        if resume is None:
            return 0
        if str(resume) == "auto":
            self.checkpoints, problem = load_index(self.ckpt_dir)
            if problem:
                self._checkpoint_alert(problem, None, "the previous index and the checkpoint files found are used")
                if self.dist.is_main:  # one process repairs the shared folder
                    write_index(self.ckpt_dir, self.checkpoints)
            if delivered_seq is not None:
                self._drop_undelivered(delivered_seq)
            restored = self._restore_latest()
            if restored is None:
                self._emit_resume_alerts()
                return 0
            step, chosen = restored
            path = self.ckpt_dir / chosen["file"]
        else:
            chosen, path = {}, Path(resume)
            step = self.restore(path)
        self._emit_resume_alerts()
        self.emitter.emit("log", message=f"resumed from {path} at step {step}")
        if delivered_seq is not None and chosen.get("seq", -1) > delivered_seq:
            # its own "checkpoint" event was the one lost: announce it again (the consumer keys it by step)
            self.emitter.emit("checkpoint", step=step, path=str(path), healthy=chosen["healthy"])
        return step

    def _restore_latest(self) -> tuple[int, dict[str, Any]] | None:
        """Restore the newest checkpoint that loads -> (step, its index entry); None when none does. A damaged
        file (truncated by a full disk, garbage) is set aside as <name>.corrupt with an alert, and the one
        before it is tried: the run goes on from there instead of failing every resume."""
        while self.checkpoints:
            chosen = self.checkpoints[-1]
            path = self.ckpt_dir / chosen["file"]
            try:
                return self.restore(path), chosen
            except (CheckpointError, FileNotFoundError) as exc:  # not found: set aside by another rank meanwhile
                self.checkpoints.pop()
                if self.dist.is_main:
                    if path.exists():
                        path.replace(path.with_name(path.name + ".corrupt"))
                    write_index(self.ckpt_dir, self.checkpoints)
                fallback = self.checkpoints[-1] if self.checkpoints else None
                self._checkpoint_alert(str(exc), chosen["step"], f"resuming from step {fallback['step']}"
                                       if fallback else "no earlier checkpoint: starting from step 0", fallback)
        return None

    def _checkpoint_alert(self, problem: str, step: int | None, outcome: str,
                          fallback: dict[str, Any] | None = None) -> None:
        """An `alert` event for a checkpoint or index that could not be read, and what the resume did instead;
        held until the resume has restored the run's id and seq (the CLI learns them from the checkpoint)."""
        self._resume_alerts.append(dict(kind="checkpoint_unreadable", step=step, metric="checkpoint", value=None,
                          baseline=None, threshold=None, severity="warning", message=f"{problem}: {outcome}",
                          remedy="check the storage (full disk, failing volume); the run continues from the "
                          "checkpoint named here", evidence={"problem": problem},
                          last_healthy_checkpoint=str(self.ckpt_dir / fallback["file"]) if fallback else None))

    def _emit_resume_alerts(self) -> None:
        for payload in self._resume_alerts:
            self.emitter.emit("alert", **payload)
        self._resume_alerts = []

    def _drop_undelivered(self, delivered_seq: int) -> None:
        """Forget (and delete) the checkpoints written after events that never arrived (seq > delivered + 1).
        An index from before seqs were recorded has none: such a checkpoint counts as covered."""
        covered = [c for c in self.checkpoints if c.get("seq", -1) <= delivered_seq + 1]
        dropped = [c for c in self.checkpoints if c.get("seq", -1) > delivered_seq + 1]
        if not dropped:
            return
        for c in dropped:
            (self.ckpt_dir / c["file"]).unlink(missing_ok=True)
        self.checkpoints = covered
        write_index(self.ckpt_dir, self.checkpoints)
        self.emitter.emit("log", level="warning", message=(
            f"checkpoint(s) at step {', '.join(str(c['step']) for c in dropped)} written after events that never "
            f"arrived (delivered up to seq {delivered_seq}): resuming from "
            f"{'step ' + str(covered[-1]['step']) if covered else 'the start'} and training those steps again"))

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> tuple[torch.Tensor, float, float | None]:
        """One optimisation step -> (device row of METRIC_KEYS, lr, m or None without a momentum encoder); nothing
        here waits for the device."""
        cfg = self.cfg
        t = step / self.ipe  # fractional epoch
        lr = learning_rate(t, self.peak_lr * self.lr_scale, cfg.optim.warmup_epochs, cfg.optim.epochs)
        ema = self.model.target_momentum
        m = momentum(t, ema[0], cfg.optim.epochs, ema[1]) if ema else None
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        position = step + self.data_offset  # the data (and its augmentation) of this step: see data_offset
        images, labels = self.stream.batch(position)
        self.gen.manual_seed(step_seed(cfg.train.seed, position))
        x1, x2 = self.augment(images, self.gen)

        with self.autocast:
            loss, feats = self.ddp(x1, x2)
        if cfg.faults.spike_at_step == step and "spike" not in self.faults_fired:
            # a batch whose gradient is scaled up by spike_scale: a gradient spike the monitor must catch
            self.faults_fired.add("spike")
            loss_for_grad = loss * cfg.faults.spike_scale
        else:
            loss_for_grad = loss
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss_for_grad).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss_for_grad.backward()
        self.model.after_backward(t)
        if cfg.faults.nan_grad_at_step == step and "nan" not in self.faults_fired:
            self.faults_fired.add("nan")
            next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(float("nan"))  # type: ignore[union-attr]

        norms = self.grad_norms()  # [global, groups...]
        nonfinite = ~(torch.isfinite(norms[0]) & torch.isfinite(loss.detach()))
        self.update_ratios.snapshot()
        if self.scaler:
            self.scaler.step(self.optimizer)  # skips non-finite steps itself
            self.scaler.update()
        elif supports_found_inf(self.optimizer):
            self.optimizer.found_inf = nonfinite.float()  # type: ignore[attr-defined]
            self.optimizer.step()  # skipped on the device when found_inf is 1
        elif not bool(nonfinite):  # LARS / LAMB: one host sync to skip a bad step
            self.optimizer.step()
        ratios = self.update_ratios()  # of the step just taken (0 where it was skipped)
        if m is not None:
            self.model.update_momentum(m)
        if self.knn is not None:
            self.knn.enqueue(feats, labels)
        return torch.cat([loss.detach().float().reshape(1), norms, nonfinite.float().reshape(1), ratios]), lr, m

    # ------------------------------------------------------------------ readback and policy
    def readback(self, pending: list[tuple[int, tuple[torch.Tensor, float, float | None]]],
                 elapsed: float) -> Alert | None:
        """Read the pending steps' metrics in one sync, emit them, run the monitor; -> the alert to act on."""
        if not pending:
            return None
        rows = all_reduce_mean(torch.stack([r for _, (r, _, _) in pending]), self.dist).cpu().tolist()
        imgs_per_s = len(pending) * self.cfg.optim.batch_size / max(elapsed, 1e-9)
        act_on: Alert | None = None
        for (step, (_, lr, m)), row in zip(pending, rows, strict=True):
            values = dict(zip(METRIC_KEYS, row, strict=True))
            values["lr"] = lr
            if m is not None:
                values["momentum"] = m
            if step == pending[-1][0]:
                values["imgs_per_s"] = imgs_per_s
                if self.step_flops:
                    tflops, mfu = achieved(self.step_flops, max(elapsed, 1e-9) / len(pending),
                                           self.peak[1] if self.peak else None)
                    values["tflops"] = tflops
                    if mfu is not None:
                        values["mfu"] = 100.0 * mfu
            self.losses[step] = values["loss"]
            if self.dist.is_main:
                self.emitter.emit("metrics", step=step, epoch=(step + 1) / self.ipe, values=values)
            alerts = self.monitor.observe_step(step, values)
            act_on = self._handle(alerts) or act_on
        return act_on

    def _handle(self, alerts: list[Alert]) -> Alert | None:
        act_on = None
        for alert in alerts:
            healthy = self.last_healthy(int(alert.evidence.get("spike_step", alert.step)))
            alert.last_healthy_checkpoint = str(self.ckpt_dir / healthy["file"]) if healthy else None
            self.alerts.append(alert)
            if self.dist.is_main:
                self.emitter.emit("alert", **alert.to_payload())
            if self.cfg.monitor.policy != "record":
                act_on = act_on or alert
        return act_on

    def score_knn(self, step: int) -> Alert | None:
        """The kNN monitor's evaluation at `step`: its accuracy and the collapse signals, one metrics event, and
        the monitor's detectors on them."""
        assert self.knn is not None
        values = self.knn.score(self.model.backbone, self.autocast)
        if self.dist.is_main:
            self.emitter.emit("metrics", step=step, epoch=(step + 1) / self.ipe, values=values)
        alerts = self.monitor.observe_signals(step, values, feat_dim=self.knn.feats.shape[1])
        if "knn_top1" in values:
            alerts += self.monitor.observe_knn(step, values["knn_top1"])
        return self._handle(alerts)

    # ------------------------------------------------------------------ the run
    def run(self, resume: str | Path | None = "auto", delivered_seq: int | None = None) -> PretrainResult:
        cfg = self.cfg
        step = self.resume(resume, delivered_seq)
        if cfg.fork_from and not self.restored:  # a fork's first start (once it has checkpoints, it resumes them)
            step = self.fork(Path(cfg.fork_from))
        self.emitter.emit("config", spec=cfg.model_dump(), device=str(self.device), precision=self.precision,
                          world_size=self.dist.world_size, iters_per_epoch=self.ipe, peak_lr=self.peak_lr,
                          threads=self.threads, compiled=self.compiled, step_flops=self.step_flops,
                          peak_tflops=self.peak[1] if self.peak else None)
        self.emitter.emit("status", state="running", phase="pretrain", step=step, total_steps=self.end_step,
                          message=f"pretraining {cfg.model.arch} with {cfg.framework} on {cfg.data.dataset}")
        self.model.train()
        pending: list[tuple[int, tuple[torch.Tensor, float, float | None]]] = []
        self._hang_if_due(step)
        tick = time.perf_counter()
        status, reason = "succeeded", ""
        while step < self.end_step:
            # under DDP the ranks agree on a stop at read-back boundaries only: the all-reduce syncs the host
            # with the device, which the loop otherwise does only there
            if (not self.dist.enabled or step % cfg.train.log_every == 0) and \
                    any_rank(self.should_stop(), self.dist, self.device):
                status, reason = "stopped", "stop requested"
                break
            pending.append((step, self.train_step(step)))
            step += 1
            boundary = step % cfg.train.log_every == 0 or step == self.end_step or step % cfg.train.ckpt_every == 0 \
                or self._hang_due(step)
            knn_due = self.knn is not None and cfg.monitor.knn_every > 0 and step % cfg.monitor.knn_every == 0
            if not (boundary or knn_due):
                continue
            alert = self.readback(pending, time.perf_counter() - tick)
            pending, tick = [], time.perf_counter()
            if alert is None and knn_due:
                alert = self.score_knn(step - 1)
            if alert is not None:
                outcome = self._act(alert, step)
                if outcome == "stop":
                    status, reason = "stopped", f"{alert.kind} at step {alert.step}: policy {cfg.monitor.policy}"
                    break
                if isinstance(outcome, int):
                    step = outcome
                    continue
            if step % cfg.train.ckpt_every == 0 and step < self.end_step:
                self.save(step)
            if self._hang_if_due(step):
                tick = time.perf_counter()
        self.readback(pending, time.perf_counter() - tick)
        path = self.save(step)
        last = self.losses.get(step - 1)
        self.emitter.emit("status", state=status, step=step, message=reason or f"finished at step {step}",
                          checkpoint=str(path) if path else None, final_loss=last)
        return PretrainResult(self.run_id, status, step, str(path) if path else None, reason,
                              {"loss": last} if last is not None else {}, [a.to_payload() for a in self.alerts],
                              dict(self.losses))

    def _act(self, alert: Alert, reached: int) -> str | int | None:
        """The policy's answer to an alert at the read-back that reached step `reached`: "stop", the step to
        continue from after a rollback, or None (go on)."""
        policy = self.cfg.monitor.policy
        if policy == "stop":
            return "stop"
        if policy == "rollback":
            mon = self.cfg.monitor
            alert_step = int(alert.evidence.get("spike_step", alert.step))
            target = self.last_healthy(alert_step)
            if target is None or self.rollbacks >= mon.max_rollbacks:
                return "stop"
            self.rollbacks += 1
            reached_offset = self.data_offset
            path = self.ckpt_dir / target["file"]
            step = self.restore(path, keep_lr_scale=True)  # data_offset: the checkpoint's
            for later in [c for c in self.checkpoints if c["step"] > step]:  # the abandoned branch
                (self.ckpt_dir / later["file"]).unlink(missing_ok=True)
            self.checkpoints = [c for c in self.checkpoints if c["step"] <= step]
            write_index(self.ckpt_dir, self.checkpoints)
            self.lr_scale *= mon.rollback_lr_factor
            skipped: list[int] | None = None
            if mon.rollback_skip:
                # the data positions steps step .. alert_step + margin consumed on the abandoned branch: the replay
                # of step `step` takes the first position after them (PaLM §5.1: skip the batches around a spike)
                first, last = step + self.data_offset, alert_step + mon.rollback_skip_margin + reached_offset
                if last >= first:
                    self.data_offset = last + 1 - step
                    skipped = [first, last]
            if self.dist.is_main:
                self.emitter.emit("rollback", branch=self.rollbacks, from_step=reached, to_step=step,
                                  alert_kind=alert.kind, alert_step=alert_step, lr_scale=self.lr_scale,
                                  skipped=skipped, checkpoint=str(path))
            self.emitter.emit("log", message=f"rolled back to step {step} ({target['file']}) after {alert.kind}; "
                                             f"lr scaled to x{self.lr_scale:g}" +
                                             (f"; data positions {skipped[0]}-{skipped[1]} skipped" if skipped else ""))
            return step
        return None

    # ------------------------------------------------------------------ fork and injected hang
    def fork(self, path: Path) -> int:
        """Start this run from another run's checkpoint (PretrainConfig.fork_from) -> its step. Weights, optimizer
        state, RNG, monitor and kNN state, data offset and step come from the checkpoint; the optimizer's
        hyper-parameters, the schedules, lr_scale (1), the rollback count (0), the injected faults, the run id and
        the event numbering are this run's own."""
        try:
            ckpt = load_checkpoint(path, self.device)
        except (FileNotFoundError, CheckpointError) as exc:
            raise ForkError(f"fork_from: {exc}") from None
        try:
            self.model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError) as exc:
            raise ForkError(f"fork_from: {path} holds another model than this spec's "
                            f"({str(exc).strip().splitlines()[0][:300]})") from None
        parent_cfg = ckpt.get("config") or {}
        if (parent_cfg.get("optim") or {}).get("name", self.cfg.optim.name) == self.cfg.optim.name:
            mine = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group, hyper in zip(self.optimizer.param_groups, mine, strict=True):
                group.update(hyper)  # this spec's weight decay, betas...: the loaded state keeps only the moments
        else:
            self.emitter.emit("log", level="warning", message=f"fork: the parent's optimizer "
                              f"({parent_cfg['optim']['name']}) differs from {self.cfg.optim.name}: its state is not "
                              "carried over")
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        try:
            self.monitor.load_state_dict(ckpt["monitor"])
        except (ValueError, KeyError) as exc:
            self.emitter.emit("log", level="warning", message=f"fork: the parent's monitor state is not used ({exc})")
        if self.knn and ckpt.get("knn") and ckpt["knn"]["feats"].shape == self.knn.feats.shape:
            self.knn.load_state_dict(ckpt["knn"])
        self.data_offset = int(ckpt.get("data_offset", 0))
        self.lr_scale, self.rollbacks, self.faults_fired = 1.0, 0, set()
        step = int(ckpt["step"])
        self.emitter.emit("log", message=f"forked from {path} (run {ckpt.get('run_id')}) at step {step}")
        return step

    def _hang_due(self, step: int) -> bool:
        return self.cfg.faults.hang_at_step == step and "hang" not in self.faults_fired

    def _hang_if_due(self, step: int) -> bool:
        """FaultConfig.hang_at_step: block before that step as a stuck data loader would (a plain sleep: the
        worker's heartbeat thread goes on beating, a cooperative stop is not honoured meanwhile). Called with
        nothing pending; a checkpoint at this step records the fault first, so a restart resumes past it."""
        if not self._hang_due(step):
            return False
        self.faults_fired.add("hang")
        self.save(step)  # (again, when this step's checkpoint was just written: now with the fault recorded)
        hang_s = self.cfg.faults.hang_s
        self.emitter.emit("log", level="warning",
                          message=f"fault injected: hanging for {hang_s:g} s before step {step}")
        self.emitter.sync()
        time.sleep(hang_s)
        return True


class ForkError(ValueError):
    """PretrainConfig.fork_from names no readable checkpoint, or one of another model."""


def pretrain(cfg: PretrainConfig, out_dir: str | Path, sinks: list[EventSink] | None = None,
             run_id: str | None = None, resume: str | Path | None = "auto",
             should_stop: Callable[[], bool] | None = None, first_seq: int | None = None,
             delivered_seq: int | None = None) -> PretrainResult:
    """Pretrain with cfg.framework (MoCo v3 by default); events go to `sinks`, checkpoints to out_dir/checkpoints.

    first_seq: where event numbering starts, for a caller that knows the last seq it delivered (the worker:
    no reused number, no gap); None = 0, or on resume the checkpoint's seq (the CLI and its JSONL log).
    delivered_seq: the highest seq its consumer holds; resume='auto' then skips checkpoints written after
    events that never arrived (see Pretrainer.resume).
    """
    trainer = Pretrainer(cfg, out_dir, sinks, run_id, should_stop, first_seq)
    try:
        result = trainer.run(resume, delivered_seq)
    except Exception as exc:
        if trainer.dist.enabled and peer_lost(exc):  # not this run's failure: the caller resumes it elsewhere
            trainer.emitter.emit("log", level="error", message=f"rank {trainer.dist.rank}: lost a peer: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        else:
            trainer.emitter.emit("status", state="failed", message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        trainer.stream.close()  # its DataLoader workers, if any, end with the run
    shutdown_distributed(trainer.dist)
    return result
