"""Specs: importable without torch, defaults of the paper, presets, dotted overrides and their errors."""

import json
import subprocess
import sys

import pytest

from mocov3_core.config import ConfigError, PretrainConfig, json_schema, validate_spec
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
