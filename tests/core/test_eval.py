"""Evaluation protocols: the kNN classifier on known inputs, and each protocol end to end on real data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mocov3_core.config import DataConfig, FinetuneConfig, KnnConfig, LinearConfig
from mocov3_core.eval import evaluate, weighted_knn
from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import pretrain


def test_weighted_knn_on_separable_clusters() -> None:
    torch.manual_seed(0)
    centers = torch.eye(4, 16) * 10
    train = centers.repeat_interleave(50, 0) + torch.randn(200, 16)
    labels = torch.arange(4).repeat_interleave(50)
    test = centers + 0.5 * torch.randn(4, 16)
    top1, top5 = weighted_knn(train, labels, test, torch.arange(4), num_classes=4, k=20)
    assert top1 == 100.0 and top5 == 100.0
    wrong = (torch.arange(4) + 1) % 4
    top1, _ = weighted_knn(train, labels, test, wrong, num_classes=4, k=20)
    assert top1 == 0.0


def test_weighted_knn_weights_votes_by_similarity() -> None:
    # two near neighbours of class 1 outvote three far ones of class 0 thanks to exp(sim / t)
    train = torch.tensor([[1.0, 0.05], [1.0, -0.05], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([1, 1, 0, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    top1, _ = weighted_knn(train, labels, test, torch.tensor([1]), num_classes=2, k=5, t=0.07)
    assert top1 == 100.0


def write_npz(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n // 2)):
        labels = rng.integers(0, 3, count)
        images = np.zeros((count, 28, 28), np.uint8)
        for i, y in enumerate(labels):  # class = which third of the image is bright
            images[i, :, y * 9:(y + 1) * 9] = 200
        images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
        np.savez(root / f"{split}.npz", images=images, labels=labels)


def test_pixel_knn_on_a_written_dataset(tmp_path: Path) -> None:
    write_npz(tmp_path, 300)
    sink = ListSink()
    cfg = KnnConfig(features="pixels", k=10, data=DataConfig(dataset="npz", root=str(tmp_path), crop_size=28))
    result = evaluate(cfg, [sink])
    assert result["top1"] == 100.0
    assert sink.of_type("eval_result")[0].payload["top1"] == 100.0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("pre")
    spec = build_spec("pretrain", "fmnist_tiny", ["train.max_steps=8", "data.limit=512", "monitor.knn_every=0"])
    return pretrain(spec, out, resume=None).checkpoint  # type: ignore[return-value]


SMALL = DataConfig(dataset="fashion_mnist", crop_size=28, limit=1000)


@pytest.mark.fmnist
def test_knn_of_checkpoint_and_of_random_init_differ(tiny_checkpoint: str) -> None:
    trained = evaluate(KnnConfig(checkpoint=tiny_checkpoint, k=20, data=SMALL))
    random = evaluate(KnnConfig(checkpoint=tiny_checkpoint, k=20, random_init=True, data=SMALL))
    assert trained["protocol"] == "knn" and random["random_init"] is True
    assert 10 < trained["top1"] <= 100 and 10 < random["top1"] <= 100
    assert trained["top1"] != random["top1"]


@pytest.mark.fmnist
@pytest.mark.parametrize("mode", ["cached", "paper"])
def test_linear_probe_learns_above_chance(tiny_checkpoint: str, mode: str) -> None:
    sink = ListSink()
    epochs = 10
    cfg = LinearConfig(checkpoint=tiny_checkpoint, mode=mode, epochs=epochs, batch_size=128, base_lr=4.0, data=SMALL)
    result = evaluate(cfg, [sink])
    # 10 classes: chance is 10. One seed's score moves by a few points with the batch draws (39.8 and 42.2 seen
    # for one checkpoint, keeping or dropping each epoch's partial batch): 35 is well clear of chance and of noise
    assert result["top1"] > 35
    assert len(sink.of_type("metrics")) == epochs


@pytest.mark.fmnist
def test_finetune_trains_end_to_end(tiny_checkpoint: str) -> None:
    cfg = FinetuneConfig(checkpoint=tiny_checkpoint, epochs=3, batch_size=128, mixup=0.0, cutmix=0.0,
                         warmup_epochs=0.5, base_lr=8e-3, data=SMALL)
    sink = ListSink()
    result = evaluate(cfg, [sink])
    assert result["protocol"] == "finetune" and result["top1"] > 30
    losses = [e.payload["values"]["ft_loss"] for e in sink.of_type("metrics") if "ft_loss" in e.payload["values"]]
    assert len(losses) == 21 and sum(losses[-5:]) < sum(losses[:5])


def test_an_evaluation_inherits_the_pretraining_data_except_what_its_spec_changed() -> None:
    from mocov3_core.config import DataConfig, KnnConfig
    from mocov3_core.eval.common import inherit_data
    from mocov3_core.presets import build_spec

    pretrained = DataConfig(dataset="mnist", crop_size=28, limit=5000, mean=(0.1, 0.1, 0.1), std=(0.3, 0.3, 0.3))
    # the service sends the whole resolved spec: every field is 'set', so only changes from defaults count
    for spec in (build_spec("knn", overrides={"data.limit": 2048}),
                 KnnConfig.model_validate(build_spec("knn", overrides={"data.limit": 2048}).model_dump(mode="json"))):
        data = inherit_data(spec, pretrained)  # type: ignore[arg-type]
        assert (data.dataset, data.crop_size, data.limit, data.mean) == ("mnist", 28, 2048, (0.1, 0.1, 0.1))
    untouched = inherit_data(build_spec("knn"), pretrained)  # type: ignore[arg-type]
    assert untouched.limit is None and untouched.dataset == "mnist"  # in full
    other = inherit_data(build_spec("knn", overrides={"data.dataset": "cifar10", "data.crop_size": 224}),  # type: ignore[arg-type]
                         pretrained)
    assert other.dataset == "cifar10" and other.crop_size == 28  # the ViT's input size is the checkpoint's


def write_marked_folder(root: Path, per_class: int = 3) -> Path:
    """A real ImageFolder of 320x200 PNGs: class-coloured gradients and stripes (red below 110 everywhere),
    and in class 'a' a pure red 24x24 marker in the top-left corner, outside the central 224/256 region."""
    from PIL import Image

    yy, xx = np.mgrid[0:200, 0:320]
    for c, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.zeros((200, 320, 3), np.uint8)
            img[..., 0] = (xx * 100 // 320).astype(np.uint8)
            img[..., 1] = ((yy + 40 * i) % 200 * 255 // 200).astype(np.uint8)
            img[..., 2] = np.where((xx // (16 + 16 * c)) % 2 == 0, 220, 60).astype(np.uint8)
            if name == "a":
                img[:24, :24] = (255, 0, 0)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def red_pixels(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> int:
    """Pixels of normalised images [B, 3, H, W] that are the marker's pure red."""
    rgb = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return int(((rgb[:, 0] > 0.8) & (rgb[:, 1] < 0.25) & (rgb[:, 2] < 0.25)).sum())


def test_probe_training_crops_come_from_the_whole_image_and_evaluation_from_its_centre(tmp_path: Path) -> None:
    from mocov3_core.data import ImageFolderSet, eval_batches
    from mocov3_core.eval.common import train_crops

    folder = ImageFolderSet(write_marked_folder(tmp_path / "imgs"))
    marked = torch.tensor([0] * 64)  # image 0 of class 'a', cropped 64 times
    gen = torch.Generator().manual_seed(0)
    crops, labels = train_crops(folder, marked, 28, 0.08, torch.device("cpu"), gen)
    assert crops.shape == (64, 3, 28, 28) and labels.tolist() == [0] * 64
    # the corner marker lies outside Resize(32)+CenterCrop(28): a crop drawn from that view never shows it
    assert red_pixels(crops, folder.mean, folder.std) > 0
    whole = [x for x, _ in eval_batches(folder, 8, 28)]
    assert red_pixels(torch.cat(whole), folder.mean, folder.std) == 0


def test_the_paper_probe_runs_on_an_image_folder_with_the_vit_learning_rate(tmp_path: Path) -> None:
    from mocov3_core.config import ModelConfig

    write_marked_folder(tmp_path / "imgs" / "train", per_class=5)
    write_marked_folder(tmp_path / "imgs" / "val", per_class=2)
    data = DataConfig(dataset="imagefolder", root=str(tmp_path / "imgs"), crop_size=28, num_workers=0)
    sink = ListSink()
    cfg = LinearConfig(model=ModelConfig(arch="vit_micro_p7"), mode="paper", epochs=2, batch_size=4, data=data)
    result = evaluate(cfg, [sink])
    assert result["base_lr"] == 3.0 and result["mode"] == "paper" and 0 <= result["top1"] <= 100
    assert len(sink.of_type("metrics")) == 2


def test_probe_lr_follows_the_backbone_and_the_last_partial_batch_is_kept() -> None:
    from mocov3_core.eval.common import epoch_batches
    from mocov3_core.eval.linear import probe_base_lr

    assert probe_base_lr(LinearConfig(), "vit_small_p16") == 3.0
    assert probe_base_lr(LinearConfig(), "resnet50") == 0.1
    assert probe_base_lr(LinearConfig(base_lr=0.5), "resnet50") == 0.5
    order = torch.arange(10)
    assert [order[b].tolist() for b in epoch_batches(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(torch.arange(3)[b]) for b in epoch_batches(3, 4)] == [3]  # fewer images than a batch: one
