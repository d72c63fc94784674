"""Typed run specifications for pretraining and evaluation.

Importable without torch: the server validates specs with these models and serves their JSON Schema
to the browser, so the form, the REST API and the CLI never drift. Every default is the paper's
(Chen, Xie, He 2021, "MoCo v3"; `docs/method.md` gives the source of each number) unless
its comment says otherwise. Presets live in `presets.py` and are layered as: defaults -> preset ->
``--set key=value`` overrides (an unknown key is an error naming its dotted path).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

Precision = Literal["auto", "bf16", "fp16", "fp32", "fp32-strict"]
Framework = Literal["mocov3", "simclr", "byol", "swav"]
# BN in an MLP head: after every Linear (the last one without affine, MoCo v3's heads), after the hidden
# Linears only (BYOL's heads), or nowhere (the paper's SwAV on ViT, App. A)
HeadBN = Literal["all", "hidden", "none"]
Device = Literal["auto", "cpu", "cuda"]
DatasetName = Literal["fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "idx", "npz", "packed"]
# Where JPEG files are decoded: auto = on the training GPU (nvJPEG, batched) when training on CUDA, else in
# DataLoader workers on the CPU (DCT-domain downscaling where the crop allows)
Decode = Literal["auto", "cpu", "device"]
# A team's registered dataset: lowercase letters, digits, ".", "_" and "-", starting with a letter or digit
DatasetRef = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


# Bounds on every number of a spec: a typo or a hostile client must not queue 10**30 epochs or an infinite lr (the
# server validates with these models and renders its form from their JSON Schema, so they show up in both). Each
# range leaves room above every published recipe; a comment gives the reason where the number is not obvious.
MAX_EPOCHS = 10_000
MAX_BATCH = 1_048_576  # 2**20 images: 170x the paper's largest batch (6144, in its batch-size study)
MAX_WIDTH = 16_384  # channels of a backbone or head: 12.8x ViT-H's 1280, 4x the paper's 4096-wide MLP heads
MAX_DEPTH = 256  # blocks: 8x ViT-H's 32
MAX_HEADS = 256
MAX_IMAGE = 4096  # pixels per side: 18x ImageNet's 224 crops; one 4096^2 RGB image is already 200 MB in fp32
MAX_LR = 100.0  # any per-256 lr: above every recipe (MoCo v1's linear probe used 30)
MAX_WEIGHT_DECAY = 10.0
MIN_TEMPERATURE = 1e-3  # logits are cos/τ in [-1/τ, 1/τ]: 1000 at most keeps them finite and ordered in fp16 (65504)
MAX_TEMPERATURE = 100.0  # beyond it every softmax is flat to float precision
# Steps and seeds: exact as JSON numbers in a browser (2**53 - 1), so the form and clone-and-edit keep them; within
# int64 for torch, SQL BIGINT and the derived seeds.
MAX_INT = 2**53 - 1
MAX_IMAGES = 10**10  # images in a data set: above the largest public one (LAION-5B, 5.85e9)
MAX_NAME = 200  # characters of a run name (the runs list sends every name on every load)
MAX_PATH = 4096  # PATH_MAX on Linux
# Names and paths: printable, no control characters (a NUL breaks PostgreSQL text and C paths; newlines break logs)
RunName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[^\x00-\x1f\x7f]+$")]
PathStr = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH, pattern=r"^[^\x00-\x1f\x7f]+$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Temperature = Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)]
Width = Annotated[int, Field(ge=8, le=MAX_WIDTH)]
Steps = Annotated[int, Field(ge=1, le=MAX_INT)]
_Std = Annotated[float, Field(ge=1e-3, le=1.0)]
_Jitter = Annotated[float, Field(ge=0.0, le=10.0)]  # a factor drawn from [max(0, 1 - s), 1 + s]
_Hue = Annotated[float, Field(ge=0.0, le=0.5)]  # a shift of the hue circle: 0.5 is half a turn (torchvision's bound)
_Sigma = Annotated[float, Field(ge=1e-3, le=100.0)]  # σ = 0 makes the kernel 0/0
_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
_MIN_KNN_T = 0.012  # kNN votes are exp(sim/t) with sim up to 1: exp(1/t) overflows fp32 for t below 0.0113


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and ±Infinity (Python's json reads the literals, and 1e999 is inf) are refused
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# The backbones `models/registry.py` builds, named here so that a spec is checked without importing torch
# (the server validates specs; the registry refuses to register a name missing from this list).
BACKBONES = ("resnet50", "vit_base_p16", "vit_conv_base", "vit_conv_small", "vit_huge_p14", "vit_large_p16",
             "vit_micro_p7", "vit_mini_p7", "vit_small_p16", "vit_small_p4", "vit_tiny_p16", "vit_tiny_p4")
# Each ViT's (patch_size, embed_dim, num_heads, conv_stem) as `models/registry.py` builds it, so that a spec's
# overrides are checked against the shape they change (tests/core/test_config.py holds the two together).
VIT_SHAPES: dict[str, tuple[int, int, int, bool]] = {
    "vit_tiny_p16": (16, 192, 3, False), "vit_small_p16": (16, 384, 12, False), "vit_base_p16": (16, 768, 12, False),
    "vit_large_p16": (16, 1024, 16, False), "vit_huge_p14": (14, 1280, 16, False),
    "vit_conv_small": (16, 384, 12, True), "vit_conv_base": (16, 768, 12, True), "vit_tiny_p4": (4, 192, 3, False),
    "vit_small_p4": (4, 384, 12, False), "vit_mini_p7": (7, 128, 4, False), "vit_micro_p7": (7, 64, 2, False)}


def spec_error(path: str, message: str) -> PydanticCustomError:
    """A check across fields, raised in a model validator: `validate_spec` reports it at `path` (dotted, relative to
    the model), where pydantic alone would name only the model."""
    return PydanticCustomError("spec_mismatch", "{message}", {"path": path, "message": message})


def _check_shape(model: ModelConfig, crop_size: int) -> None:
    """What `models/vit.py` asserts, named by field: the image splits into patches, the width into heads."""
    if model.arch not in VIT_SHAPES:
        return
    patch, width, heads, conv_stem = VIT_SHAPES[model.arch]
    patch, width, heads = model.patch_size or patch, model.embed_dim or width, model.num_heads or heads
    img = model.img_size or crop_size
    # the field named is the one the spec set (an override breaks a shape that held), the image size otherwise
    size_at = "model.patch_size" if model.patch_size else "model.img_size" if model.img_size else "data.crop_size"
    heads_at = "model.num_heads" if model.num_heads and not model.embed_dim else "model.embed_dim"
    if conv_stem and patch != 16:
        raise spec_error("model.patch_size", f"{model.arch} has a convolutional stem of stride 16; got {patch}")
    if img % patch:
        raise spec_error(size_at, f"image size {img} is not a multiple of the patch size {patch}")
    if width % heads:
        raise spec_error(heads_at, f"width {width} does not split into {heads} heads")
    if model.pos_embed == "sincos" and width % 4:
        raise spec_error("model.embed_dim", f"width {width} must be a multiple of 4 for the 2-D sin-cos embedding")
    if conv_stem and width % 8:
        raise spec_error("model.embed_dim", f"width {width} must be a multiple of 8 for the convolutional stem")


class ModelConfig(_Strict):
    """The backbone (`BACKBONES`, built by `models/registry.py`) and the paper's ViT ablation switches."""

    arch: str = Field("vit_small_p16", description="Registered backbone name, e.g. vit_small_p16, vit_base_p16, "
                      "vit_conv_small, resnet50, vit_mini_p7 (CPU-sized).")
    img_size: int | None = Field(None, ge=8, le=MAX_IMAGE, description="Input size; None = the data's crop size.")
    patch_size: int | None = Field(None, ge=1, le=MAX_IMAGE, description="Override the constructor's patch size.")
    embed_dim: int | None = Field(None, ge=8, le=MAX_WIDTH, description="Override the width (a multiple of the "
                                  "heads; of 4 for sin-cos, of 8 for the conv stem).")
    depth: int | None = Field(None, ge=1, le=MAX_DEPTH, description="Override the number of blocks.")
    num_heads: int | None = Field(None, ge=1, le=MAX_HEADS, description="Override the number of heads (ViT-S "
                                  "uses 12, head dim 32).")
    pos_embed: Literal["sincos", "learned", "none"] = Field(
        "sincos", description="Position embedding: fixed 2-D sin-cos (paper, 76.5), learned (76.1), none (74.9).")
    pool: Literal["cls", "gap", "gap_no_ln"] = Field(
        "cls", description="Class token after the final LN (76.5), GAP after the final LN (69.7), GAP without "
        "it (76.3).")
    stop_grad_patch_proj: bool = Field(
        True, description="Fixed random patch projection (paper §4.2): frozen, identical in both encoders.")
    mlp_norm: Literal["ln", "bn"] = Field("ln", description="'bn' = ViT-BN: BatchNorm in the MLP blocks (paper §6.3).")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Stochastic depth (0 in pretraining).")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; one of: {', '.join(BACKBONES)}")
        return value


class MocoConfig(_Strict):
    """MoCo v3 heads, loss and momentum encoder (paper §3, §5; docs/method.md §1)."""

    dim: int = Field(256, ge=8, le=MAX_WIDTH, description="Output dimension of projector and predictor (also the "
                     "other frameworks' heads unless their section sets dim).")
    mlp_dim: int = Field(4096, ge=8, le=MAX_WIDTH, description="Hidden width of the MLP heads (likewise shared).")
    proj_layers: int | None = Field(None, ge=1, le=4, description="Projector depth; None = 3 for ViT, 2 for ResNet.")
    pred_layers: int = Field(2, ge=1, le=4, description="Predictor depth.")
    head_bn: bool = Field(True, description="BN in the MLP heads (without: 74.4 vs 76.5).")
    predictor: bool = Field(True, description="Use the prediction head (without: 75.5 vs 76.5).")
    temperature: Temperature = Field(0.2, description="τ: 0.2 for ViT, 1.0 for ResNet-50.")
    momentum: float = Field(0.99, ge=0.0, le=1.0,
                            description="m0 of the momentum encoder (0.99; ablation 0/0.9/0.999).")
    momentum_cosine: bool = Field(True, description="Half-cosine schedule of m from m0 to 1 per iteration.")


_HEAD_DIM = "Output width of the projector; None = moco.dim (every framework gets the same heads, as in the paper's "\
    "comparison, so a preset's head size applies to all)."
_HEAD_MLP = "Hidden width of the MLP heads; None = moco.mlp_dim."
_HEAD_LAYERS = "Projector depth; None = moco.proj_layers (3 for ViT, 2 for ResNet)."


class SimclrConfig(_Strict):
    """SimCLR (Chen et al. 2020) on the same backbone: NT-Xent over the 2N crops of the batch, every other crop a
    negative, gathered with gradient across GPUs; no predictor, no momentum encoder (paper §6.1, Table 4)."""

    dim: Width | None = Field(None, description=_HEAD_DIM)
    mlp_dim: Width | None = Field(None, description=_HEAD_MLP)
    proj_layers: int | None = Field(None, ge=1, le=4, description=_HEAD_LAYERS)
    head_bn: HeadBN = Field("all", description="BN in the projector: 'all' = MoCo v3's head (whose final BN "
                            "is SimCLR's, gamma removed), 'hidden', 'none'.")
    temperature: Temperature = Field(0.2, description="τ of NT-Xent; 0.2 = the paper's ViT value for MoCo v3 "
                               "(SimCLR's own ImageNet value is 0.1).")


class ByolConfig(_Strict):
    """BYOL (Grill et al. 2020): online encoder + predictor regress the momentum target's projection with the
    normalised MSE 2 - 2cos, symmetrised; no negatives. BN in the hidden layers of the heads only (paper App. A)."""

    dim: Width | None = Field(None, description=_HEAD_DIM)
    mlp_dim: Width | None = Field(None, description=_HEAD_MLP)
    proj_layers: int | None = Field(None, ge=1, le=4, description=_HEAD_LAYERS)
    pred_layers: int = Field(2, ge=1, le=4, description="Predictor depth (BYOL: 2).")
    predictor: bool = Field(True, description="The prediction head. Without it the online projection regresses "
                            "the target's directly, which collapses (BYOL Table 5a, SimSiam Table 1): a known-bad "
                            "setting, kept as the collapse detectors' real negative control.")
    head_bn: HeadBN = Field("hidden", description="BN in projector and predictor: 'hidden' = BYOL's heads (the "
                            "paper's BYOL on ViT), 'all', 'none'.")
    momentum: float = Field(0.99, ge=0.0, le=1.0, description="m0 of the target encoder, raised to 1 by MoCo v3's "
                            "half-cosine: 0.99 as MoCo v3 on ViT (BYOL's own ImageNet value: 0.996).")
    momentum_cosine: bool = Field(True, description="Half-cosine schedule of m from m0 to 1 per iteration.")


class SwavConfig(_Strict):
    """SwAV (Caron et al. 2020) with two crops (no multi-crop, as the paper compared): l2-normalised projections
    scored against normalised prototypes, codes from 3 Sinkhorn-Knopp iterations on the batch, swapped prediction.
    No BN in the heads, as the paper ran SwAV on ViT (App. A); no queue (the paper's batch is 4096)."""

    dim: Width | None = Field(None, description=_HEAD_DIM)
    mlp_dim: Width | None = Field(None, description=_HEAD_MLP)
    proj_layers: int | None = Field(None, ge=1, le=4, description=_HEAD_LAYERS)
    head_bn: HeadBN = Field("none", description="BN in the projector: 'none' = the paper's SwAV on ViT.")
    num_prototypes: int = Field(3000, ge=2, le=MAX_WIDTH * 4, description="Number of prototypes K (SwAV on "
                                "ImageNet: 3000).")
    temperature: Temperature = Field(0.1, description="τ of the softmax over prototype scores (SwAV: 0.1).")
    # ε >= 0.025: Sinkhorn takes exp((s - max s) / ε) of scores in [-1, 1]; at 2/ε > 87 a prototype far from
    # the batch underflows fp32 to 0 in every entry and its row sum divides by zero
    epsilon: float = Field(0.05, ge=0.025, le=10.0, description="Entropy regularisation of Sinkhorn-Knopp (SwAV: "
                           "0.05; smaller is sharper and less stable).")
    sinkhorn_iters: int = Field(3, ge=1, le=100, description="Sinkhorn-Knopp iterations (SwAV: 3).")
    freeze_prototypes_epochs: float = Field(1.0, ge=0.0, le=MAX_EPOCHS, description="Prototypes get no update "
                                            "during the first "
                                            "epochs (SwAV: 313 iterations, one epoch at batch 4096); 0 = never "
                                            "frozen.")


class DataConfig(_Strict):
    """Where images come from. Relative roots resolve against the working directory."""

    dataset: DatasetName = Field("fashion_mnist", description="Reader: fashion_mnist/mnist (IDX, Debian's package by "
                                 "default), cifar10/cifar100 (python pickles), imagefolder, idx, npz arrays.")
    root: PathStr | None = Field(None, description="Dataset folder or file; None = the dataset's standard location.")
    crop_size: int = Field(224, ge=8, le=MAX_IMAGE, description="Output size of both crops (2x224 in the paper).")
    # pixels are in [0, 1] when normalised, so a mean is too; a std of 0 would divide by zero
    mean: tuple[Probability, Probability, Probability] | None = Field(
        None, description="Normalisation mean of [0, 1] pixels; None = the dataset's.")
    std: tuple[_Std, _Std, _Std] | None = Field(None, description="Normalisation std; None = the dataset's.")
    limit: int | None = Field(None, ge=1, le=MAX_IMAGES, description="Use only the first N training images (a "
                              "seeded subset).")
    num_workers: int = Field(4, ge=0, le=256, description="Decoding workers for image files (in-memory sets need "
                             "none).")
    name: DatasetRef | None = Field(None, description="A dataset the team registered (mocolab datasets add): the "
                                    "service fills dataset, root, mean and std from it (its packed copy once "
                                    "prepared). The engine itself ignores it.")
    decode: Decode = Field("auto", description="Where JPEGs are decoded: auto = on the training GPU (batched "
                           "nvJPEG) when training on CUDA, else cpu (DataLoader workers, DCT-domain downscaling); "
                           "device forces the training device.")


class AugmentConfig(_Strict):
    """The paper's two asymmetric views (BYOL's recipe, docs/method.md §4), computed in batches on the device."""

    crop_min: float = Field(0.08, gt=0.0, le=1.0, description="RandomResizedCrop lower scale: 0.08 ViT, 0.2 R50.")
    jitter: tuple[_Jitter, _Jitter, _Jitter, _Hue] = Field((0.4, 0.4, 0.2, 0.1), description="Brightness, "
                                                          "contrast, saturation, hue strengths (hue at most 0.5).")
    jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0)
    blur_p: tuple[Probability, Probability] = Field((1.0, 0.1), description="Gaussian blur probability for view 1 "
                                                    "and view 2.")
    blur_sigma: tuple[_Sigma, _Sigma] = Field((0.1, 2.0), description="Blur σ range (in pixels at 224).")
    solarize_p: tuple[Probability, Probability] = Field((0.0, 0.2), description="Solarize probability for view 1 "
                                                        "and view 2.")
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class OptimConfig(_Strict):
    """Optimiser and schedules: lr = base_lr x batch/256, linear warmup, per-iteration cosine decay."""

    name: Literal["adamw", "lars", "lamb"] = Field("adamw", description="AdamW for ViT, LARS for ResNet-50.")
    base_lr: float = Field(1.5e-4, gt=0.0, le=MAX_LR, description="Per-256 learning rate (ViT 1.5e-4; R50 LARS "
                           "0.6/0.3).")
    weight_decay: float = Field(0.1, ge=0.0, le=MAX_WEIGHT_DECAY, description="0.1 for ViT (on every tensor, as "
                                "the paper); 1e-6 for R50.")
    betas: tuple[_Beta, _Beta] = Field((0.9, 0.999), description="AdamW/LAMB betas (torch defaults).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="LARS momentum.")
    trust_coeff: float = Field(0.001, gt=0.0, le=1.0, description="LARS trust coefficient.")
    exclude_bias_norm_wd: bool = Field(False, description="Exempt 1-D tensors from weight decay (the paper did not).")
    batch_size: int = Field(4096, ge=2, le=MAX_BATCH, description="Global batch (all GPUs together; a multiple "
                            "of the number of processes, checked when they start).")
    epochs: int = Field(300, ge=1, le=MAX_EPOCHS)
    warmup_epochs: float = Field(40, ge=0.0, le=MAX_EPOCHS, description="Linear warmup from 0 (ViT 40, R50 10); "
                                 "at most the epochs.")


class TrainConfig(_Strict):
    seed: int = Field(0, ge=0, le=MAX_INT, description="Seeds data order, augmentation and initialisation.")
    threads: int | None = Field(None, ge=1, le=1024, description="Intra-op CPU threads; None = torch's default "
                                "(one per physical core, or OMP_NUM_THREADS). The count changes the last bits of "
                                "CPU sums: set it for the same digits from processes whose defaults differ.")
    device: Device = Field("auto", description="auto = CUDA when present, else CPU.")
    precision: Precision = Field("auto", description="auto = bf16 on GPUs that have it, else fp16+scaler on CUDA, "
                                 "fp32 on CPU (bf16 is ~15x slower on CPUs without native support). On CUDA, fp32 "
                                 "matrix multiplies and convolutions use TF32 tensor cores (10-bit mantissa "
                                 "products, fp32 sums; ~7x the fp32 rate); fp32-strict is fp32 with TF32 off "
                                 "(IEEE fp32 throughout, for exactness checks).")
    max_steps: Steps | None = Field(None, description="Stop after this many steps (schedules still span epochs).")
    log_every: Steps = Field(10, description="Read metrics back from the device every N steps (no per-step sync).")
    ckpt_every: Steps = Field(500, description="Save a checkpoint every N steps (and at the end).")
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="Rolling checkpoints kept besides the last healthy "
                                  "one.")
    compile: Literal["auto", True, False] = Field(
        "auto", description="torch.compile the encoders (inductor: fuses the norms, activations and residual adds "
        "between the matrix multiplies). auto = on CUDA, off on the CPU, where compiling costs more than it "
        "saves in a short run. The first steps wait for the compilation (about a minute for ViT-B on a GPU "
        "machine).")
    cudnn_benchmark: bool = Field(True, description="Let cuDNN time and pick the fastest convolution algorithms "
                                  "for the run's fixed shapes, as the official code does (the patch projection "
                                  "is a convolution); off = the same algorithms in every process.")


class MonitorConfig(_Strict):
    """Stability monitor (paper §4): gradient spikes, loss spikes, kNN dips, and what to do about them."""

    policy: Literal["record", "stop", "rollback"] = Field(
        "record", description="On an alert: record it; stop the run; or roll back to the last healthy checkpoint "
        "with a lower lr.")
    warmup_steps: int = Field(50, ge=0, le=MAX_INT, description="Steps before spike detectors arm (the baseline "
                              "needs history).")
    window: int = Field(100, ge=8, le=100_000, description="Steps in the robust baseline (median and MAD, "
                        "re-sorted every step: kept small).")
    spike_z: float = Field(8.0, gt=0.0, le=1e6, description="Robust z-score above the median that counts as a spike.")
    spike_ratio: float = Field(2.5, gt=1.0, le=1e6, description="...and the value must also exceed ratio x median.")
    loss_spike_z: float = Field(8.0, gt=0.0, le=1e6)
    knn_every: int = Field(50, ge=0, le=MAX_INT, description="Steps between dense kNN monitor evaluations (0 = off).")
    knn_queue: int = Field(4096, ge=16, le=2**24, description="Feature queue of training batches (paper: 10% of "
                           "the set; 2**24 x 384 floats is already 25 GB).")
    knn_eval_samples: int = Field(1000, ge=10, le=1_000_000, description="Held-out images scored against the queue.")
    knn_k: int = Field(20, ge=1, le=10_000, description="Neighbours (at most knn_queue).")
    knn_t: float = Field(0.07, ge=_MIN_KNN_T, le=MAX_TEMPERATURE, description="Vote weight exp(sim/t).")
    dip_points: float = Field(3.0, gt=0.0, le=100.0, description="A kNN drop of this many points below the recent "
                              "best is a dip.")
    dip_after_spike_steps: Steps = Field(300, description="Window in which a dip after a gradient spike is linked.")
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="The rollback policy multiplies the lr by "
                                      "this at each rollback.")
    max_rollbacks: int = Field(3, ge=0, le=100, description="Rollbacks per run; an alert after the last one stops "
                               "the run.")
    rollback_skip: bool = Field(True, description="After a rollback to step s for a spike at step t, skip the data "
                                "batches steps s..t+rollback_skip_margin consumed, so the replay sees fresh data "
                                "(PaLM §5.1); off = replay the same batches.")
    rollback_skip_margin: int = Field(10, ge=0, le=MAX_INT, description="Batches after the alert's step skipped too.")
    # SSL-specific signals (docs/method.md §6.1 gives the reasons for each value)
    update_spike_z: float = Field(8.0, gt=0.0, le=1e6, description="Robust z-score above the median of a group's "
                                  "update-to-weight ratio ||Δw||/||w|| that counts as an update spike.")
    update_spike_ratio: float = Field(3.0, gt=1.0, le=1e6, description="...and the ratio must also exceed this "
                                      "multiple of its median.")
    entropy_collapse_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="Attention entropy below this "
                                             "fraction of its best over the last collapse_history evaluations is "
                                             "an entropy collapse.")
    entropy_floor: float = Field(0.1, ge=0.0, le=100.0, description="...or below this many nats (attention on "
                                 "about one token), having been above it.")
    rank_collapse_fraction: float = Field(0.6, gt=0.0, lt=1.0, description="RankMe of the monitor's held-out "
                                          "features below this fraction of its best is a rank collapse.")
    feat_std_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="...or feat_std below this fraction of "
                                     "1/sqrt(d), having been above it.")
    collapse_history: int = Field(10, ge=1, le=10_000, description="kNN evaluations an entropy's recent best is "
                                  "taken over.")
    collapse_min_evals: int = Field(2, ge=1, le=10_000, description="Evaluations seen before the fraction tests "
                                    "arm.")
    # stalled runs: read by the server's watchdog (docs/operations.md), not by the engine
    stall_policy: Literal["record", "restart"] = Field("record", description="A stalled run (heartbeats alive, no "
                                                       "new step): record a stall alert, or also restart it from its "
                                                       "latest checkpoint.")
    stall_factor: float = Field(10.0, gt=1.0, le=1e6, description="Stalled when the last step is older than "
                                "stall_factor x the run's usual step time...")
    stall_min_s: float = Field(120.0, ge=1.0, le=86_400.0, description="...and older than this many seconds.")


class FaultConfig(_Strict):
    """Faults injected on purpose, to exercise the monitor (tests, demos)."""

    nan_grad_at_step: int | None = Field(None, ge=0, le=MAX_INT, description="Make the gradient non-finite at this "
                                         "step.")
    spike_at_step: int | None = Field(None, ge=0, le=MAX_INT, description="Scale this step's inputs up to cause a "
                                      "gradient spike.")
    spike_scale: float = Field(1000.0, gt=1.0, le=1e4, description="Input scale of the spike (at most 1e4: scaled "
                               "pixels stay finite in fp16).")
    hang_at_step: int | None = Field(None, ge=0, le=MAX_INT, description="Block before this step, as a stuck data "
                                     "loader would: the heartbeat goes on, no step advances, a stop is not honoured "
                                     "meanwhile (the stalled-run tests). Fires once per run, not again after a "
                                     "restart.")
    hang_s: float = Field(3600.0, ge=1.0, le=86_400.0, description="How long the hang blocks, in seconds.")


# lr and wd the paper used for the other frameworks on ViT (Fig. 6: ViT-B, batch 4096; lr and wd were searched per
# framework, §6.1). Applied when the spec leaves optim.base_lr / optim.weight_decay unset. SwAV's were not published:
# it keeps MoCo v3's. Source: docs/method.md §6 (values via a secondary summary of Fig. 6, marked uncertain there).
FRAMEWORK_OPTIM: dict[str, dict[str, float]] = {
    "simclr": {"base_lr": 2e-4, "weight_decay": 0.1},
    "byol": {"base_lr": 1e-4, "weight_decay": 0.03},
}


class PretrainConfig(_Strict):
    kind: Literal["pretrain"] = "pretrain"
    framework: Framework = Field(
        "mocov3", description="Self-supervised method: mocov3, simclr, byol or swav (paper §6.1, Table 4), each on the "
        "same backbone, data, augmentation and monitor; its settings are in the section of the same name (moco for "
        "mocov3). optim.base_lr and optim.weight_decay, when unset, take the framework's paper values "
        "(simclr 2e-4 / 0.1, byol 1e-4 / 0.03, otherwise 1.5e-4 / 0.1).")
    name: RunName | None = Field(None, description="Human-readable run name.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    moco: MocoConfig = Field(default_factory=MocoConfig)
    simclr: SimclrConfig = Field(default_factory=SimclrConfig)
    byol: ByolConfig = Field(default_factory=ByolConfig)
    swav: SwavConfig = Field(default_factory=SwavConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    fork_from: PathStr | None = Field(None, description="Start from this checkpoint of another run (a .pt file or "
                                      "a run folder's latest): its weights, optimizer state, RNG, monitor and kNN "
                                      "state and step, then this spec's own schedules, lr scale 1, run id and "
                                      "events. Set by the service's fork (relative to the storage root), never "
                                      "by a client.")

    @model_validator(mode="before")
    @classmethod
    def _framework_optim_defaults(cls, data: Any) -> Any:
        """optim.base_lr / optim.weight_decay left unset take the chosen framework's paper values."""
        if not isinstance(data, dict) or data.get("framework") not in FRAMEWORK_OPTIM:
            return data
        paper = FRAMEWORK_OPTIM[data["framework"]]
        optim = data.get("optim")
        if optim is None or isinstance(optim, dict):
            return {**data, "optim": {**paper, **(optim or {})}}
        if isinstance(optim, OptimConfig):
            unset = {k: v for k, v in paper.items() if k not in optim.model_fields_set}
            return {**data, "optim": OptimConfig(**{**optim.model_dump(include=optim.model_fields_set), **unset})}
        return data  # not a section: the field validation reports it with its path

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.augment.blur_sigma[0] > self.augment.blur_sigma[1]:
            raise spec_error("augment.blur_sigma", "the lower bound exceeds the upper bound")
        if self.optim.warmup_epochs > self.optim.epochs:
            raise spec_error("optim.warmup_epochs", f"longer than the {self.optim.epochs} epochs of the run")
        if self.data.limit is not None and self.data.limit < self.optim.batch_size:
            raise spec_error("optim.batch_size", f"more than the {self.data.limit} images of data.limit")
        if self.monitor.knn_k > self.monitor.knn_queue:
            raise spec_error("monitor.knn_k", f"more neighbours than the queue's {self.monitor.knn_queue} features")
        _check_shape(self.model, self.data.crop_size)
        return self


class _EvalBase(_Strict):
    name: RunName | None = None
    checkpoint: PathStr | None = Field(None, description="Pretraining checkpoint (.pt); None with random_init or "
                                       "pixels.")
    random_init: bool = Field(False, description="Evaluate the checkpoint's network at random initialisation.")
    model: ModelConfig | None = Field(None, description="Backbone when no checkpoint is given.")
    data: DataConfig = Field(default_factory=lambda: DataConfig(crop_size=28))
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check_model(self) -> _EvalBase:
        if self.model is not None:
            _check_shape(self.model, self.data.crop_size)
        return self


class KnnConfig(_EvalBase):
    kind: Literal["knn"] = "knn"
    features: Literal["backbone", "pixels"] = Field("backbone", description="'pixels' = raw-pixel baseline.")
    k: int = Field(200, ge=1, le=10_000, description="Neighbours (Wu et al. 2018: 200).")
    temperature: float = Field(0.07, ge=_MIN_KNN_T, le=MAX_TEMPERATURE, description="Weighting temperature "
                               "exp(sim/t).")
    batch_size: int = Field(512, ge=1, le=MAX_BATCH)


class LinearConfig(_EvalBase):
    kind: Literal["linear"] = "linear"
    mode: Literal["cached", "paper"] = Field(
        "cached", description="'paper': RandomResizedCrop+flip every epoch through the frozen backbone; 'cached': "
        "features once, then many fast epochs.")
    epochs: int = Field(90, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(1024, ge=1, le=MAX_BATCH)
    base_lr: float | None = Field(None, gt=0.0, le=MAX_LR, description="Per-256 lr; None = the official recipe's "
                                  "for the backbone: 3 for ViT, 0.1 for ResNet-50 (moco-v3 CONFIG.md, main_lincls.py).")
    weight_decay: float = Field(0.0, ge=0.0, le=MAX_WEIGHT_DECAY)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class FinetuneConfig(_EvalBase):
    kind: Literal["finetune"] = "finetune"
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS, description="ViT-B 150, ViT-S 300 on ImageNet (DeiT recipe).")
    batch_size: int = Field(512, ge=1, le=MAX_BATCH)
    base_lr: float = Field(5e-4, gt=0.0, le=MAX_LR, description="Per-512 lr (DeiT: 5e-4 x batch/512).")
    weight_decay: float = Field(0.05, ge=0.0, le=MAX_WEIGHT_DECAY)
    warmup_epochs: float = Field(5, ge=0.0, le=MAX_EPOCHS, description="At most the epochs.")
    min_lr: float = Field(1e-5, ge=0.0, le=MAX_LR, description="At most base_lr.")
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    mixup: float = Field(0.8, ge=0.0, le=100.0, description="Mixup alpha (0 = off).")
    cutmix: float = Field(1.0, ge=0.0, le=100.0, description="CutMix alpha (0 = off).")
    crop_min: float = Field(0.08, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_schedule(self) -> FinetuneConfig:
        if self.warmup_epochs > self.epochs:
            raise spec_error("warmup_epochs", f"longer than the {self.epochs} epochs of the run")
        if self.min_lr > self.base_lr:
            raise spec_error("min_lr", f"above base_lr ({self.base_lr})")
        return self


class PrepareConfig(_Strict):
    """Inspect a dataset (counts, classes, per-channel statistics, a grid of samples) and, when `out` is set, write
    its packed copy: JPEG shards re-encoded at a fixed short side with an index, for fast random access
    (docs/datasets.md). Resumable shard by shard; verified against the source's image count."""

    kind: Literal["prepare"] = "prepare"
    name: RunName | None = Field(None, description="Human-readable run name.")
    data: DataConfig = Field(default_factory=DataConfig, description="The source: its reader (dataset) and root.")
    out: PathStr | None = Field(None, description="Folder of the packed copy (train/ and val/ shards); None = "
                                "inspect only.")
    short_side: int = Field(256, ge=32, le=MAX_IMAGE, description="Shorter side images are re-encoded at (never "
                            "upscaled): 256 keeps every 224 crop of the paper's recipe a downscale.")
    quality: int = Field(90, ge=50, le=100, description="JPEG quality of the re-encoded images.")
    shard_mb: int = Field(256, ge=1, le=4096, description="Target size of one shard file in MB.")
    stats_images: int = Field(10_000, ge=10, le=MAX_IMAGES, description="Training images the per-channel mean and "
                              "std are measured on (a seeded sample; all of an in-memory set).")
    samples: int = Field(32, ge=0, le=256, description="Images in the sample grid.")
    workers: int = Field(4, ge=0, le=256, description="Encoding processes.")


EvalConfig = Annotated[KnnConfig | LinearConfig | FinetuneConfig, Field(discriminator="kind")]
RunSpec = Annotated[PretrainConfig | KnnConfig | LinearConfig | FinetuneConfig | PrepareConfig,
                    Field(discriminator="kind")]

CONFIG_TYPES: dict[str, type[_Strict]] = {
    "pretrain": PretrainConfig, "knn": KnnConfig, "linear": LinearConfig, "finetune": FinetuneConfig,
    "prepare": PrepareConfig}


class ConfigError(ValueError):
    """A bad key or value, with the dotted path of the field at fault."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, booleans, null, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(tree: dict[str, Any], dotted: str, value: Any, model: type[BaseModel]) -> None:
    """Set `a.b.c = value` in a nested dict, refusing keys the config model does not have."""
    keys = dotted.split(".")
    cls: Any = model
    node = tree
    for i, key in enumerate(keys):
        fields = getattr(cls, "model_fields", None)
        if fields is None or key not in fields:
            known = ", ".join(sorted(fields)) if fields else "none (not a section)"
            raise ConfigError(".".join(keys[: i + 1]), f"unknown key; known here: {known}")
        if i == len(keys) - 1:
            node[key] = value
            return
        annotation = fields[key].annotation
        cls = _section_type(annotation)
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(keys[: i + 1]), "is a value, not a section")


def _section_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # Optional[Section]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: sections merge key by key, values in `over` win."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def validate_spec(
    kind: str, data: dict[str, Any]
) -> PretrainConfig | KnnConfig | LinearConfig | FinetuneConfig | PrepareConfig:
    """Validate a spec dict; a failure raises ConfigError naming the first bad field's dotted path."""
    from pydantic import ValidationError

    cls = CONFIG_TYPES.get(kind)
    if cls is None:
        raise ConfigError("kind", f"unknown run kind {kind!r}; one of {', '.join(CONFIG_TYPES)}")
    try:
        return cls.model_validate({**data, "kind": kind})  # type: ignore[return-value]
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = (err.get("ctx") or {}).get("path", "") if err["type"] == "spec_mismatch" else ""
        path = ".".join([*(str(p) for p in err["loc"]), *([inner] if inner else [])])
        raise ConfigError(path, err["msg"]) from None


def json_schema(kind: str = "pretrain") -> dict[str, Any]:
    return CONFIG_TYPES[kind].model_json_schema()
