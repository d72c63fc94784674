"""Per-step communication of one MoCo v3 run on many GPUs, and the scaling efficiency it allows: computed, not measured.

    PYTHONPATH=. python bench/comm_volume.py            # ViT-S/16 and ViT-B/16, global batch 4096, 8/64/256 GPUs
    PYTHONPATH=. python bench/comm_volume.py --mfu 0.2 --batch 1024

The parameter counts, the BN widths of the heads and the FLOPs of a training step are read off the repo's own
model (`mocov3_core.frameworks.MoCo` with the default `ModelConfig`/`MocoConfig` at 224 px), built on the CPU;
the FLOPs are counted by `torch.utils.flop_counter` over one real step (forward of both encoders, loss, backward)
with timm's fused attention switched to its explicit matmuls so the attention is counted too. Everything else
is arithmetic with the formulas below (docs/scaling.md explains them and quotes this script's output).

Bytes each GPU moves per step (p GPUs, B global batch, fp32 = 4 bytes):
- gradient all-reduce (DDP, fp32 grads of the P trainable parameters), ring: 2 (p-1)/p * 4P
- keys all-gather (`mocov3_core/moco/loss.py`, twice a step: k1 and k2, [B/p, dim] fp32 each): (p-1)/p * 2 * B * dim * 4
- SyncBN in the heads, per BN of width C and per view (the views keep their own statistics): forward all-gathers
  [mean, invstd, count] (2C+1 floats) from every rank, (p-1)(2C+1)*4; backward (query encoder only)
  all-reduces [sum_dy, sum_dy_xmu] (2C floats), 2 (p-1)/p * 2C*4.

Time model: a collective of "bus bytes" b takes alpha + b / busbw (nccl-tests' bus bandwidth), where busbw is
the slowest hop: NVLink per GPU inside one machine; across machines the node's NICs, which NCCL's rings share
(each ring crosses the node boundary once, so a node's network carries one GPU's bus bytes, split over its
NICs). Step compute = FLOPs per image * B / p / (MFU * peak). DDP overlaps the gradient all-reduce with the
backward pass; the keys' gathers and SyncBN sit on the critical path. Efficiency = compute / (compute + exposed
communication).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

FP32 = 4
GPUS_PER_NODE = 8
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM, dense (no sparsity)


@dataclass(frozen=True)
class Link:
    name: str
    busbw: float  # bytes/s a GPU's share of a collective moves through the slowest hop
    alpha: float  # s per small collective (assumed; sets the cost of SyncBN's many tiny collectives)


NVLINK = Link("NVLink (one machine)", 450e9, 10e-6)  # H100 NVLink 4: 900 GB/s both ways = 450 GB/s each way
INFINIBAND = Link("8x400 Gb/s InfiniBand per node", 8 * 400e9 / 8, 25e-6)  # 8 NICs x 400 Gb/s = 400 GB/s
ETHERNET = Link("100 Gb/s Ethernet per node", 100e9 / 8, 50e-6)


@dataclass(frozen=True)
class Model:
    arch: str
    trainable: int  # parameters that get a gradient (the frozen patch projection and position table do not)
    total: int  # both encoders, trainable or not
    query_bn: tuple[int, ...]  # BN widths in the query encoder's heads (projector + predictor)
    momentum_bn: tuple[int, ...]  # BN widths in the momentum encoder's projector
    backbone_gflops: float  # forward of one 224 px image through the backbone, FLOPs (2 per multiply-add)
    step_gflops: float  # one training step per image (both views, both encoders, backward), FLOPs


def measure(arch: str) -> Model:
    """Build the repo's MoCo v3 for `arch` at 224 px and read its sizes and its FLOPs off one CPU step."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from mocov3_core.config import MocoConfig, ModelConfig
    from mocov3_core.frameworks import MoCo

    torch.manual_seed(0)
    model = MoCo(ModelConfig(arch=arch), MocoConfig(), 224)
    for module in model.modules():
        if hasattr(module, "fused_attn"):  # timm: SDPA is not counted on the CPU; its matmul form is
            setattr(module, "fused_attn", False)  # noqa: B010 (nn.Module's typed __setattr__)

    def widths(prefix: str) -> tuple[int, ...]:
        return tuple(m.num_features for name, m in model.named_modules()
                     if name.startswith(prefix) and isinstance(m, nn.modules.batchnorm._BatchNorm))

    x = torch.randn(2, 3, 224, 224)  # 2 images: BN needs more than one row per view
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model.base.backbone(x)
    with FlopCounterMode(display=False) as step:
        loss, _ = model(x, x.flip(0))
        loss.backward()
    return Model(arch=arch, trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                 total=sum(p.numel() for p in model.parameters()),
                 query_bn=widths("base.") + widths("predictor."), momentum_bn=widths("momentum."),
                 backbone_gflops=fwd.get_total_flops() / 2 / 1e9, step_gflops=step.get_total_flops() / 2 / 1e9)


@dataclass(frozen=True)
class Volume:
    grads: float  # bytes per GPU per step
    keys: float
    syncbn: float
    collectives: int  # latency-bound collectives on the critical path (key gathers + SyncBN)

    @property
    def total(self) -> float:
        return self.grads + self.keys + self.syncbn


def volume(model: Model, gpus: int, batch: int, dim: int = 256) -> Volume:
    p = gpus
    grads = 2 * (p - 1) / p * model.trainable * FP32
    keys = (p - 1) / p * 2 * batch * dim * FP32
    views = 2
    fwd = sum((p - 1) * (2 * c + 1) * FP32 for c in model.query_bn + model.momentum_bn) * views
    bwd = sum(2 * (p - 1) / p * 2 * c * FP32 for c in model.query_bn) * views
    calls = 2 + views * (2 * len(model.query_bn) + len(model.momentum_bn)) if p > 1 else 0
    return Volume(grads, keys, fwd + bwd, calls)


def link_for(gpus: int, network: Link) -> Link:
    """One machine: NVLink. Several: the slower of NVLink and the node's network."""
    if gpus <= GPUS_PER_NODE:
        return NVLINK
    return network if network.busbw < NVLINK.busbw else Link(network.name, NVLINK.busbw, network.alpha)


@dataclass(frozen=True)
class Estimate:
    compute_s: float
    allreduce_s: float
    critical_s: float  # key gathers + SyncBN: not overlapped
    efficiency: float  # with the all-reduce overlapped with the backward pass
    efficiency_no_overlap: float


def estimate(model: Model, gpus: int, batch: int, link: Link, mfu: float, peak: float = H100_BF16_DENSE) -> Estimate:
    compute = model.step_gflops * 1e9 * batch / gpus / (mfu * peak)
    vol = volume(model, gpus, batch)
    allreduce = vol.grads / link.busbw if gpus > 1 else 0.0
    critical = (vol.keys + vol.syncbn) / link.busbw + vol.collectives * link.alpha
    backward = compute / 2  # the query encoder's backward (2 views x 2F) is half of the step's 8F per image
    exposed = max(0.0, allreduce - backward) + critical
    return Estimate(compute, allreduce, critical, compute / (compute + exposed),
                    compute / (compute + allreduce + critical))


def mb(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def ms(x: float) -> str:
    return f"{x * 1e3:,.2f}"


def report(models: list[Model], gpu_counts: list[int], batch: int, mfu: float) -> str:
    lines = [f"MoCo v3, global batch {batch}, fp32 gradients and keys, {GPUS_PER_NODE} GPUs per machine "
             "(computed, not measured)", "",
             "| model | trainable params | all params (both encoders) | backbone fwd GFLOPs/img | step GFLOPs/img |",
             "|---|---|---|---|---|"]
    for m in models:
        lines.append(f"| {m.arch} | {m.trainable:,} | {m.total:,} | {m.backbone_gflops:.2f} | {m.step_gflops:.1f} |")
    lines += ["", "Bytes each GPU moves per step (MB = 10^6 bytes):", "",
              "| model | GPUs | grad all-reduce MB | keys all-gather MB | SyncBN MB | total MB |",
              "|---|---|---|---|---|---|"]
    for m in models:
        for p in gpu_counts:
            v = volume(m, p, batch)
            lines.append(f"| {m.arch} | {p} | {mb(v.grads)} | {mb(v.keys)} | {mb(v.syncbn)} | {mb(v.total)} |")
    lines += ["", f"Scaling efficiency on H100s at MFU {mfu:.0%} of {H100_BF16_DENSE / 1e12:.0f} TFLOP/s bf16 "
              "(all-reduce overlapped with backward / not overlapped):", "",
              "| model | GPUs | interconnect | compute ms | all-reduce ms | gathers+SyncBN ms | efficiency "
              "| no overlap |",
              "|---|---|---|---|---|---|---|---|"]
    for m in models:
        for p in gpu_counts:
            for network in ((NVLINK,) if p <= GPUS_PER_NODE else (INFINIBAND, ETHERNET)):
                link = link_for(p, network)
                e = estimate(m, p, batch, link, mfu)
                lines.append(f"| {m.arch} | {p} | {link.name} | {ms(e.compute_s)} | {ms(e.allreduce_s)} | "
                             f"{ms(e.critical_s)} | {e.efficiency:.0%} | {e.efficiency_no_overlap:.0%} |")
    lines += ["", "| model | checkpoint GB (weights of both encoders + AdamW's two moments, fp32) |", "|---|---|"]
    for m in models:
        lines.append(f"| {m.arch} | {(m.total + 2 * m.trainable) * FP32 / 1e9:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", default=None, help="default: vit_small_p16 and vit_base_p16")
    ap.add_argument("--gpus", type=int, action="append", default=None, help="default: 8, 64, 256")
    ap.add_argument("--batch", type=int, default=4096, help="global batch (default 4096, the paper's)")
    ap.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default 0.4)")
    args = ap.parse_args(argv)
    models = [measure(a) for a in args.arch or ["vit_small_p16", "vit_base_p16"]]
    print(report(models, args.gpus or [8, 64, 256], args.batch, args.mfu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
