"""Request and response schemas of the datasets API (the table is `server.models.Dataset`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mocov3_core.config import MAX_IMAGE, DatasetName, DatasetRef, PathStr

DatasetStatus = Literal["scanning", "ready", "failed"]
PrepareStatus = Literal["none", "preparing", "prepared", "failed"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetCreate(_Body):
    name: DatasetRef = Field(description="Unique in the team: lowercase letters, digits, '.', '_' and '-'.")
    path: PathStr = Field(description="The dataset's folder on the server and workers (absolute), inside the "
                          "allowed dataset roots.")
    kind: DatasetName | None = Field(None, description="Its reader; null = told from the folder: IDX files (idx; "
                                     "fashion_mnist/mnist for Debian's folders), cifar-10-batches-py (cifar10), "
                                     "cifar-100-python (cifar100), train.npz (npz), meta.json of a packed copy "
                                     "(packed), class sub-folders (imagefolder).")
    team: str | None = Field(None, max_length=64, description="One of your teams; default: your first.")


class DatasetPrepare(_Body):
    short_side: int = Field(256, ge=32, le=MAX_IMAGE, description="Shorter side the images are re-encoded at "
                            "(never upscaled).")
    quality: int = Field(90, ge=50, le=100, description="JPEG quality of the re-encoded images.")


class SplitPublic(BaseModel):
    images: int


class ImageSizePublic(BaseModel):
    min: list[int] = Field(description="[height, width] in pixels")
    median: list[int]
    max: list[int]


class PackedPublic(BaseModel):
    root: str = Field(description="The packed copy's folder, relative to the storage root.")
    short_side: int | None = None
    quality: int | None = None
    shards: int | None = None
    bytes: int | None = None
    splits: dict[str, SplitPublic] | None = None
    seconds: float | None = None


class DatasetPublic(BaseModel):
    name: str
    team: str
    kind: str
    root: str | None
    status: DatasetStatus
    error: str | None
    builtin: bool
    created_at: datetime
    updated_at: datetime
    splits: dict[str, SplitPublic] | None = Field(None, description="train, and val when there is one.")
    classes: list[str] | None = Field(None, description="Class names in label order.")
    num_classes: int | None = None
    mean: list[float] | None = Field(None, description="Per-channel mean of [0, 1] pixels of the train split.")
    std: list[float] | None = None
    image_size: ImageSizePublic | None = None
    stats_images: int | None = Field(None, description="Images the mean and std were measured on.")
    sample_labels: list[int] | None = Field(None, description="The label of each cell of the sample grid, "
                                            "row-major.")
    has_samples: bool = Field(False, description="GET /datasets/{name}/samples.jpg has a grid to show.")
    skipped_count: int | None = Field(None, description="Source images left out: unreadable (truncated, not an "
                                      "image, a decompression bomb) or symlinks leading outside the dataset's "
                                      "folder (never read).")
    skipped: list[str] | None = Field(None, description="The first of them (at most 20; links out first).")
    skipped_reasons: list[str] | None = Field(None, description="Why each of `skipped` was left out, in its order.")
    prepare_status: PrepareStatus
    packed: PackedPublic | None = None
    scan_run_id: str | None
    prepare_run_id: str | None
