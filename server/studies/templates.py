"""The paper's comparisons as study templates: what each varies, and the numbers the paper printed for it.

A template's axis values are the paper's; a study may replace them (a CPU-sized run rarely wants batch
4096). Each value is a label and the spec overrides it stands for. `paper` holds the published accuracy
per label (ImageNet, the setting named in `setting`), shown beside ours when a study uses the template;
sources are docs/method.md §6 and §7 (the paper's Tables 4 and 5, Figs. 1-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Value:
    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class AxisTemplate:
    name: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class PaperTable:
    source: str
    setting: str
    protocol: str  # the evaluation the numbers are: linear
    numbers: dict[str, float]  # one axis: label -> top-1; two axes: "label1 | label2" -> top-1
    notes: str = ""


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    axes: tuple[AxisTemplate, ...]
    paper: PaperTable | None = None
    base: dict[str, Any] = field(default_factory=dict)


def _axis(name: str, path: str, values: list[tuple[str, Any]]) -> AxisTemplate:
    return AxisTemplate(name, tuple(Value(label, {path: v}) for label, v in values))


LR = _axis("learning rate", "optim.base_lr", [("0.5e-4", 0.5e-4), ("1.0e-4", 1.0e-4), ("1.5e-4", 1.5e-4)])

TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("frameworks", "Frameworks on ViT-S",
             "MoCo v3, SimCLR, BYOL and SwAV on the same backbone, data and augmentation.",
             (_axis("framework", "framework", [("MoCo v3", "mocov3"), ("SimCLR", "simclr"), ("BYOL", "byol"),
                                                ("SwAV", "swav")]),),
             PaperTable("Table 4", "ViT-S/16, 300 epochs, random patch projection", "linear",
                        {"MoCo v3": 72.5, "SimCLR": 69.0, "BYOL": 71.0, "SwAV": 67.1})),
    Template("momentum", "Momentum coefficient", "The momentum encoder's coefficient m (0: no momentum encoder).",
             (_axis("momentum", "moco.momentum", [("0", 0.0), ("0.9", 0.9), ("0.99", 0.99), ("0.999", 0.999)]),),
             PaperTable("Table 5", "ViT-B/16, 300 epochs, random patch projection", "linear",
                        {"0": 74.3, "0.9": 75.6, "0.99": 76.5, "0.999": 75.0})),
    Template("position-embedding", "Position embedding", "Fixed 2-D sin-cos, learned, or none.",
             (_axis("position embedding", "model.pos_embed",
                    [("sin-cos", "sincos"), ("learned", "learned"), ("none", "none")]),),
             PaperTable("Table 5", "ViT-B/16, 300 epochs, random patch projection", "linear",
                        {"sin-cos": 76.5, "learned": 76.1, "none": 74.9})),
    Template("class-token", "Class token", "The class token, or global average pooling with or without the final LN.",
             (_axis("class token", "model.pool",
                    [("CLS", "cls"), ("GAP + final LN", "gap"), ("GAP, no final LN", "gap_no_ln")]),),
             PaperTable("Table 5", "ViT-B/16, 300 epochs, random patch projection", "linear",
                        {"CLS": 76.5, "GAP + final LN": 69.7, "GAP, no final LN": 76.3})),
    Template("bn-in-heads", "BN in the MLP heads", "BatchNorm in the projector and predictor, or none.",
             (_axis("BN in heads", "moco.head_bn", [("with BN", True), ("without BN", False)]),),
             PaperTable("Table 5", "ViT-B/16, 300 epochs, random patch projection", "linear",
                        {"with BN": 76.5, "without BN": 74.4},
                        "Without BN the paper needed batch 2048 to converge.")),
    Template("predictor", "Prediction head", "With or without the predictor MLP.",
             (_axis("predictor", "moco.predictor", [("with", True), ("without", False)]),),
             PaperTable("Table 5", "ViT-B/16, 300 epochs, random patch projection", "linear",
                        {"with": 76.5, "without": 75.5})),
    Template("batch-size", "Batch size", "Larger batches are less stable (Fig. 1: dips from 4k, large dips at 6k).",
             (_axis("batch size", "optim.batch_size", [("1k", 1024), ("2k", 2048), ("4k", 4096), ("6k", 6144)]),),
             PaperTable("Fig. 1", "ViT-B/16, 100 epochs, lr 1.0e-4, learned patch projection", "linear",
                        {"1k": 71.5, "2k": 72.6, "4k": 72.2, "6k": 69.7}),
             base={"optim.base_lr": 1.0e-4, "model.stop_grad_patch_proj": False}),
    Template("learning-rate", "Learning rate", "A larger lr trains faster and less stably (Fig. 2).",
             (LR,),
             PaperTable("Fig. 2", "ViT-B/16, 100 epochs, batch 4096, learned patch projection", "linear",
                        {"0.5e-4": 70.4, "1.0e-4": 72.2, "1.5e-4": 71.7},
                        "1.5e-4's 71.7 is derived from the paper's text (73.4 - 1.7)."),
             base={"model.stop_grad_patch_proj": False}),
    Template("optimizer", "Optimizer", "AdamW against LAMB at their best learning rates (Fig. 3).",
             (AxisTemplate("optimizer", (
                 Value("AdamW, lr 1e-4", {"optim.name": "adamw", "optim.base_lr": 1.0e-4}),
                 Value("LAMB, lr 5e-4", {"optim.name": "lamb", "optim.base_lr": 5e-4, "optim.weight_decay": 1e-3}),
             )),),
             PaperTable("Fig. 3", "ViT-B/16, 100 epochs, batch 4096, learned patch projection", "linear",
                        {"AdamW, lr 1e-4": 72.2, "LAMB, lr 5e-4": 72.5}),
             base={"model.stop_grad_patch_proj": False}),
    Template("patch-projection", "Patch projection frozen or learned",
             "The paper's stability fix: a fixed random patch projection, at three learning rates (Fig. 5).",
             (_axis("patch projection", "model.stop_grad_patch_proj", [("learned", False), ("frozen", True)]), LR),
             PaperTable("Fig. 5", "ViT-B/16, 100 epochs, batch 4096", "linear",
                        {"learned | 0.5e-4": 70.4, "learned | 1.0e-4": 72.2, "learned | 1.5e-4": 71.7,
                         "frozen | 0.5e-4": 70.8, "frozen | 1.0e-4": 72.8, "frozen | 1.5e-4": 73.4},
                        "Frozen values derived from the stated gains (+0.4 / +0.6 / +1.7).")),
)}


def paper_number(template: Template, labels: list[str]) -> float | None:
    if template.paper is None:
        return None
    return template.paper.numbers.get(" | ".join(labels))
