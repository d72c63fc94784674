"""The instability pair (docs/results.md, "The paper's instability, caught for real"): both presets validate and
differ only in the patch projection, so the pair isolates the paper's fix."""

from mocov3_core.config import PretrainConfig
from mocov3_core.presets import PRETRAIN_PRESETS, build_spec


def test_the_unstable_pair_differs_only_in_the_patch_projection() -> None:
    learned = build_spec("pretrain", "fmnist_unstable").model_dump(mode="json")
    frozen = build_spec("pretrain", "fmnist_unstable_frozen").model_dump(mode="json")
    assert learned["model"]["stop_grad_patch_proj"] is False
    assert frozen["model"]["stop_grad_patch_proj"] is True
    frozen["model"]["stop_grad_patch_proj"] = False
    assert frozen == learned


def test_the_unstable_regime_is_fmnist_small_at_a_10x_lr_with_dense_monitoring() -> None:
    small, unstable = build_spec("pretrain", "fmnist_small"), build_spec("pretrain", "fmnist_unstable")
    assert isinstance(small, PretrainConfig) and isinstance(unstable, PretrainConfig)
    assert unstable.optim.base_lr == 10 * small.optim.base_lr
    assert unstable.optim.warmup_epochs < small.optim.warmup_epochs
    assert (unstable.model.arch, unstable.optim.batch_size, unstable.train.seed) == (small.model.arch, 256, 0)
    assert unstable.train.log_every == 1 and unstable.monitor.knn_every == 20 and unstable.train.max_steps == 300
    assert "fmnist_unstable" in PRETRAIN_PRESETS and "fmnist_unstable_frozen" in PRETRAIN_PRESETS
