"""Specs: importable without torch, defaults of the paper, presets, dotted overrides and their errors."""

import json
import math
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocov3_core.config import BACKBONES, VIT_SHAPES, ConfigError, PretrainConfig, json_schema, validate_spec
from mocov3_core.presets import PRETRAIN_PRESETS, build_spec


def test_config_and_events_import_without_torch() -> None:
    code = ("import sys, mocov3_core, mocov3_core.config, mocov3_core.events, mocov3_core.presets; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_the_papers_vit_recipe() -> None:
    c = PretrainConfig()
    assert (c.moco.temperature, c.moco.momentum, c.moco.mlp_dim, c.moco.dim) == (0.2, 0.99, 4096, 256)
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs) == ("adamw", 1.5e-4, 0.1, 40)
    assert (c.optim.epochs, c.optim.batch_size, c.augment.crop_min) == (300, 4096, 0.08)
    assert c.model.stop_grad_patch_proj and c.model.pos_embed == "sincos" and c.model.pool == "cls"
    assert c.augment.blur_p == (1.0, 0.1) and c.augment.solarize_p == (0.0, 0.2)


@pytest.mark.parametrize("name", sorted(PRETRAIN_PRESETS))
def test_every_preset_validates(name: str) -> None:
    spec = build_spec("pretrain", name)
    assert spec.kind == "pretrain"


def test_resnet_preset_is_the_official_recipe() -> None:
    s = build_spec("pretrain", "resnet50_100ep")
    assert (s.optim.name, s.optim.base_lr, s.optim.weight_decay, s.moco.temperature) == ("lars", 0.6, 1e-6, 1.0)
    assert s.augment.crop_min == 0.2 and s.optim.warmup_epochs == 10


def test_overrides_layer_over_preset() -> None:
    s = build_spec("pretrain", "fmnist_tiny", ["optim.base_lr=1e-3", "model.stop_grad_patch_proj=false"])
    assert s.optim.base_lr == 1e-3 and not s.model.stop_grad_patch_proj
    assert s.model.arch == "vit_micro_p7"


@pytest.mark.parametrize(("override", "path"), [
    ("optim.bogus=1", "optim.bogus"),
    ("nosuch.key=1", "nosuch"),
    ("optim.base_lr=-1", "optim.base_lr"),
    ("model.pos_embed=rope", "model.pos_embed"),
    ("model.arch=vit_zzz", "model.arch"),
    ("optim.base_lr.x=1", "optim.base_lr"),
])
def test_bad_overrides_name_the_field(override: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_spec("pretrain", "fmnist_tiny", [override])
    assert err.value.path == path


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError, match="fmnist_small"):
        build_spec("pretrain", "nope")


def test_validate_spec_reports_nested_path() -> None:
    with pytest.raises(ConfigError) as err:
        validate_spec("pretrain", {"augment": {"jitter_p": 2}})
    assert err.value.path == "augment.jitter_p"
    with pytest.raises(ConfigError) as err:
        validate_spec("linear", {"epochs": 0})
    assert err.value.path == "epochs"


def test_json_schema_is_serialisable_with_defaults() -> None:
    for kind in ("pretrain", "knn", "linear", "finetune"):
        schema = json_schema(kind)
        json.dumps(schema)
    assert json_schema("pretrain")["$defs"]["OptimConfig"]["properties"]["base_lr"]["default"] == 1.5e-4


def test_overrides_never_leak_into_the_preset() -> None:
    build_spec("pretrain", "fmnist_tiny", ["monitor.policy=stop"])
    assert build_spec("pretrain", "fmnist_tiny").monitor.policy == "record"


# ---------------------------------------------------------------- bounds (issue 10)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what the server's RunCreate.preset accepts


@pytest.mark.parametrize("name", sorted(PRETRAIN_PRESETS))
def test_every_preset_has_a_safe_name_and_stays_within_the_bounds(name: str) -> None:
    assert SAFE_NAME.match(name)
    spec = build_spec("pretrain", name)
    assert validate_spec("pretrain", spec.model_dump(mode="json")) == spec  # what the server stores validates again


@pytest.mark.parametrize(("override", "path"), [
    ("optim.epochs=1000000000000000000000000000000", "optim.epochs"),
    ("optim.batch_size=1000000000000", "optim.batch_size"),
    ("model.embed_dim=1099511627776", "model.embed_dim"),
    ("optim.base_lr=Infinity", "optim.base_lr"),
    ("optim.base_lr=NaN", "optim.base_lr"),
    ("optim.base_lr=-Infinity", "optim.base_lr"),
    ("optim.base_lr=1e999", "optim.base_lr"),  # JSON's way to spell infinity
    ("optim.base_lr=1000", "optim.base_lr"),
    ("optim.weight_decay=NaN", "optim.weight_decay"),
    ("optim.betas=[0.9, 1.0]", "optim.betas.1"),
    ("optim.warmup_epochs=3", "optim.warmup_epochs"),  # fmnist_tiny runs 2 epochs
    ("optim.batch_size=4096", "optim.batch_size"),  # more than the 2048 images of data.limit
    ("moco.temperature=0", "moco.temperature"),
    ("moco.temperature=1e-9", "moco.temperature"),
    ("moco.momentum=1.5", "moco.momentum"),
    ("moco.mlp_dim=1000000", "moco.mlp_dim"),
    ("simclr.temperature=NaN", "simclr.temperature"),
    ("swav.epsilon=0.001", "swav.epsilon"),
    ("swav.num_prototypes=100000000", "swav.num_prototypes"),
    ("augment.crop_min=0", "augment.crop_min"),
    ("augment.crop_min=1.5", "augment.crop_min"),
    ("augment.blur_sigma=[0, 2]", "augment.blur_sigma.0"),
    ("augment.blur_sigma=[2, 0.5]", "augment.blur_sigma"),
    ("augment.jitter=[0.4, 0.4, 0.2, 0.9]", "augment.jitter.3"),
    ("augment.blur_p=[1.0, NaN]", "augment.blur_p.1"),
    ("data.crop_size=100000", "data.crop_size"),
    ("data.crop_size=30", "data.crop_size"),  # not a multiple of vit_micro_p7's patch 7
    ("data.mean=[0.5, 0.5, 2]", "data.mean.2"),
    ("data.std=[0.5, 0, 0.5]", "data.std.1"),
    ("data.root=a\nb", "data.root"),
    ("data.limit=0", "data.limit"),
    ("data.num_workers=100000", "data.num_workers"),
    ("model.patch_size=5", "model.patch_size"),  # 28 px do not split into 5 px patches
    ("model.img_size=30", "model.img_size"),
    ("model.num_heads=3", "model.num_heads"),  # 64 wide
    ("model.embed_dim=66", "model.embed_dim"),  # 33 per head, but sin-cos needs a multiple of 4
    ("model.depth=100000", "model.depth"),
    ("train.seed=-1", "train.seed"),
    ("train.seed=18446744073709551616", "train.seed"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.log_every=1e300", "train.log_every"),
    ("monitor.knn_k=2000", "monitor.knn_k"),  # more than fmnist_tiny's queue of 1024
    ("monitor.knn_t=0.001", "monitor.knn_t"),
    ("monitor.spike_z=Infinity", "monitor.spike_z"),
    ("faults.spike_scale=1e30", "faults.spike_scale"),
])
def test_hostile_values_are_refused_naming_the_field(override: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_spec("pretrain", "fmnist_tiny", [override])
    assert err.value.path == path, err.value


@pytest.mark.parametrize(("kind", "data", "path"), [
    ("knn", {"k": 10**9}, "k"),
    ("knn", {"temperature": float("inf")}, "temperature"),
    ("knn", {"checkpoint": "x" * 5000}, "checkpoint"),
    ("knn", {"checkpoint": "a\x00b"}, "checkpoint"),
    ("knn", {"name": "n" * 201}, "name"),
    ("knn", {"model": {"arch": "vit_mini_p7", "num_heads": 3}}, "model.num_heads"),
    ("knn", {"model": {"arch": "vit_mini_p7"}, "data": {"crop_size": 32}}, "data.crop_size"),
    ("knn", {"model": {"arch": "vit_conv_small", "patch_size": 8}, "data": {"crop_size": 32}}, "model.patch_size"),
    ("knn", {"model": {"arch": "vit_conv_small", "embed_dim": 84}, "data": {"crop_size": 32}}, "model.embed_dim"),
    ("linear", {"base_lr": float("nan")}, "base_lr"),
    ("linear", {"epochs": 10**6}, "epochs"),
    ("linear", {"batch_size": 10**12}, "batch_size"),
    ("finetune", {"warmup_epochs": 200}, "warmup_epochs"),
    ("finetune", {"min_lr": 1.0}, "min_lr"),
    ("finetune", {"mixup": float("inf")}, "mixup"),
    ("pretrain", {"name": "n" * 201}, "name"),
    ("pretrain", {"name": "two\nlines"}, "name"),
])
def test_evaluation_specs_are_bounded_too(kind: str, data: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_spec(kind, data)
    assert err.value.path == path, err.value


def test_the_bounds_are_in_the_json_schema_the_form_is_built_from() -> None:
    optim = json_schema("pretrain")["$defs"]["OptimConfig"]["properties"]
    assert optim["epochs"]["maximum"] == 10_000 and optim["batch_size"]["maximum"] == 1_048_576
    assert optim["base_lr"]["exclusiveMinimum"] == 0 and optim["base_lr"]["maximum"] == 100
    model = json_schema("pretrain")["$defs"]["ModelConfig"]["properties"]
    assert model["embed_dim"]["anyOf"][0]["maximum"] == 16_384


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=200, deadline=None)
def test_any_float_is_either_refused_or_finite_and_in_range(value: float) -> None:
    for key, low, high in (("optim.base_lr", 0.0, 100.0), ("moco.temperature", 1e-3, 100.0),
                           ("moco.momentum", 0.0, 1.0), ("augment.crop_min", 0.0, 1.0)):
        try:
            spec = build_spec("pretrain", "fmnist_tiny", {key: value})
        except ConfigError as err:
            assert err.path == key
            continue
        section, field = key.split(".")
        got = getattr(getattr(spec, section), field)
        assert math.isfinite(got) and low <= got <= high


@given(st.integers(min_value=-(2**80), max_value=2**80))
@settings(max_examples=200, deadline=None)
def test_any_integer_is_either_refused_or_in_range(value: int) -> None:
    for key, high in (("optim.epochs", 10_000), ("optim.batch_size", 1_048_576), ("train.seed", 2**53 - 1),
                      ("model.depth", 256), ("monitor.knn_queue", 2**24)):
        try:
            spec = build_spec("pretrain", "fmnist_tiny", {key: value})
        except ConfigError as err:
            # a small queue is in range but may hold fewer features than the preset's knn_k neighbours
            assert err.path.startswith(key) or (key == "monitor.knn_queue" and err.path == "monitor.knn_k"), err
            continue
        section, field = key.split(".")
        assert 0 <= getattr(getattr(spec, section), field) <= high


def test_the_vit_shapes_the_spec_is_checked_against_are_those_the_registry_builds() -> None:
    from mocov3_core.models.registry import _REGISTRY

    assert set(VIT_SHAPES) == {name for name in BACKBONES if name.startswith("vit")}
    for arch, (patch, width, heads, conv_stem) in VIT_SHAPES.items():
        model = _REGISTRY[arch](img_size=2 * patch, depth=1)  # one block: the shape is in the constructor's defaults
        assert (model.patch_embed.patch_size[0], model.embed_dim, model.blocks[0].attn.num_heads) == (
            patch, width, heads), arch
        assert model.conv_stem == conv_stem, arch
