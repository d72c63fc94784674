"""The training loop on real Fashion-MNIST: resume continues the same curve, the frozen tensors stay
frozen, and the stability monitor catches injected faults (and nothing in a clean run)."""

from pathlib import Path

import pytest
import torch

from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import load_checkpoint, pretrain

pytestmark = pytest.mark.fmnist

TINY = ["data.limit=512", "optim.batch_size=32", "train.log_every=4", "train.ckpt_every=8",
        "monitor.knn_every=0", "optim.epochs=2"]


def spec(*extra: str):  # noqa: ANN201
    return build_spec("pretrain", "fmnist_tiny", [*TINY, *extra])


def test_resume_mid_epoch_continues_the_same_losses(tmp_path: Path) -> None:
    full = pretrain(spec("train.max_steps=14"), tmp_path / "a", resume=None)
    calls = {"n": 0}

    def stop_after_6() -> bool:
        calls["n"] += 1
        return calls["n"] > 6

    first = pretrain(spec("train.max_steps=14"), tmp_path / "b", resume=None, should_stop=stop_after_6)
    assert first.status == "stopped" and first.step == 6  # 16 steps per epoch: mid-epoch
    sink = ListSink()
    second = pretrain(spec("train.max_steps=14"), tmp_path / "b", sinks=[sink], resume="auto")
    assert second.status == "succeeded" and second.run_id == first.run_id
    for step in range(6, 14):
        assert second.losses[step] == pytest.approx(full.losses[step], rel=1e-5, abs=1e-6), step
    for step in range(6):
        assert first.losses[step] == pytest.approx(full.losses[step], rel=1e-6)
    # the resumed run's events carry on the same seq numbering
    seqs = [e.seq for e in sink.events]
    assert seqs == sorted(seqs) and seqs[0] > 0


def test_frozen_patch_projection_and_pos_embed_never_change(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = pretrain(spec("train.max_steps=10"), tmp_path, resume=None)
    state = load_checkpoint(result.checkpoint)["model"]
    from mocov3_core.frameworks import MoCo

    cfg = spec()
    torch.manual_seed(cfg.train.seed)
    init = MoCo(cfg.model, cfg.moco, cfg.data.crop_size).state_dict()
    for enc in ("base", "momentum"):
        for key in ("backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias", "backbone.pos_embed"):
            assert torch.equal(state[f"{enc}.{key}"], init[f"base.{key}"]), f"{enc}.{key} changed"
    # ...while trainable tensors did move, in both encoders
    qkv = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(state[f"base.{qkv}"], init[f"base.{qkv}"])
    assert not torch.equal(state[f"momentum.{qkv}"], init[f"base.{qkv}"])


def test_nan_gradient_raises_alert_at_that_step_and_stop_policy_stops(tmp_path: Path) -> None:
    sink = ListSink()
    result = pretrain(spec("faults.nan_grad_at_step=9", "monitor.policy=stop", "train.max_steps=20"), tmp_path,
                      sinks=[sink], resume=None)
    alerts = [e.payload for e in sink.of_type("alert")]
    assert [a["kind"] for a in alerts] == ["non_finite"]
    assert alerts[0]["step"] == 9 and alerts[0]["severity"] == "critical"
    assert alerts[0]["last_healthy_checkpoint"].endswith("step_0000008.pt")
    assert result.status == "stopped" and result.step < 20
    assert sink.of_type("status")[-1].payload["state"] == "stopped"
    # the bad step was skipped on the device: the saved weights are finite
    state = load_checkpoint(result.checkpoint)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_gradient_under_record_policy_is_skipped_and_training_goes_on(tmp_path: Path) -> None:
    result = pretrain(spec("faults.nan_grad_at_step=9", "train.max_steps=16"), tmp_path, resume=None)
    assert result.status == "succeeded" and result.step == 16
    assert [a["kind"] for a in result.alerts] == ["non_finite"]
    assert all(v == v for v in result.losses.values())  # no NaN loss after the skipped step


def test_gradient_spike_raises_a_spike_alert(tmp_path: Path) -> None:
    result = pretrain(spec("faults.spike_at_step=20", "faults.spike_scale=1000", "train.max_steps=24"), tmp_path,
                      resume=None)
    spikes = [a for a in result.alerts if a["kind"] == "grad_spike"]
    assert spikes and spikes[0]["step"] == 20


def test_clean_run_raises_no_alert(tmp_path: Path) -> None:
    result = pretrain(spec("train.max_steps=32"), tmp_path, resume=None)
    assert result.alerts == []
    assert result.status == "succeeded"


def test_rollback_policy_restores_last_healthy_checkpoint_with_lower_lr(tmp_path: Path) -> None:
    sink = ListSink()
    result = pretrain(spec("faults.nan_grad_at_step=10", "monitor.policy=rollback", "train.max_steps=20"), tmp_path,
                      sinks=[sink], resume=None)
    assert result.status == "succeeded" and result.step == 20
    logs = [e.payload["message"] for e in sink.of_type("log")]
    assert any("rolled back to step 8" in m and "x0.5" in m for m in logs)
    steps = [e.payload["step"] for e in sink.of_type("metrics")]
    assert steps.count(8) == 2 and steps.count(9) == 2  # steps 8, 9 were trained again after the rollback
    assert load_checkpoint(result.checkpoint)["lr_scale"] == 0.5


def test_resume_numbers_events_from_the_callers_first_seq(tmp_path: Path) -> None:
    """A worker that delivered events up to seq 4 before dying continues at 5, even though the checkpoint
    was written later (its own seq is ahead): no gap in what the server receives."""
    calls = {"n": 0}

    def stop_after_6() -> bool:
        calls["n"] += 1
        return calls["n"] > 6

    pretrain(spec("train.max_steps=10"), tmp_path, resume=None, should_stop=stop_after_6)
    assert load_checkpoint(tmp_path)["seq"] > 5
    sink = ListSink()
    pretrain(spec("train.max_steps=10"), tmp_path, sinks=[sink], resume="auto", first_seq=5)
    seqs = [e.seq for e in sink.events]
    assert seqs == list(range(5, 5 + len(seqs)))


def test_resume_skips_a_checkpoint_written_after_events_that_never_arrived(tmp_path: Path) -> None:
    """A worker killed after checkpoint 16 became durable but before the metrics of steps 12-15 reached
    Redis: resuming at 16 would leave those steps out of the curve for good. The resume takes checkpoint 8
    (everything before it arrived), deletes 16, and trains 8-15 again to the same losses."""
    full = pretrain(spec("train.max_steps=20"), tmp_path / "full", resume=None)
    calls = {"n": 0}

    def stop_after_18() -> bool:
        calls["n"] += 1
        return calls["n"] > 18

    first = ListSink()
    pretrain(spec("train.max_steps=20"), tmp_path / "a", sinks=[first], resume=None, should_stop=stop_after_18,
             first_seq=0)
    ckpt_seq = {e.payload["step"]: e.seq for e in first.of_type("checkpoint")}
    assert sorted(ckpt_seq) == [8, 16, 18]
    lost_from = next(e.seq for e in first.of_type("metrics") if e.payload["step"] == 12)
    sink = ListSink()
    second = pretrain(spec("train.max_steps=20"), tmp_path / "a", sinks=[sink], resume="auto",
                      first_seq=lost_from, delivered_seq=lost_from - 1)
    assert second.status == "succeeded"
    assert any("resumed from" in e.payload["message"] and "step_0000008" in e.payload["message"]
               for e in sink.of_type("log"))
    assert any(e.payload.get("level") == "warning" and "16, 18" in e.payload["message"] for e in sink.of_type("log"))
    steps = [e.payload["step"] for e in sink.of_type("metrics")]
    assert steps == list(range(8, 20))
    for step in range(8, 20):
        assert second.losses[step] == pytest.approx(full.losses[step], rel=1e-5, abs=1e-6), step
    assert [e.seq for e in sink.events] == list(range(lost_from, lost_from + len(sink.events)))

    # only the checkpoint's own event was lost: resume there, and announce the checkpoint again
    calls["n"] = 0
    pretrain(spec("train.max_steps=20"), tmp_path / "b", resume=None, should_stop=stop_after_18, first_seq=0)
    again = ListSink()
    pretrain(spec("train.max_steps=20"), tmp_path / "b", sinks=[again], resume="auto", first_seq=ckpt_seq[18],
             delivered_seq=ckpt_seq[18] - 1)
    assert again.of_type("checkpoint")[0].payload["step"] == 18
    assert [e.payload["step"] for e in again.of_type("metrics")] == [18, 19]


def test_train_compile_trains_the_same_model_under_the_same_checkpoint_keys(tmp_path: Path) -> None:
    """train.compile=true compiles the encoders in place (inductor; on the CPU too): same losses within float
    tolerance, and a checkpoint the plain model and the evaluations load as they are."""
    plain = pretrain(spec("train.max_steps=3"), tmp_path / "plain", resume=None)
    compiled = pretrain(spec("train.max_steps=3", "train.compile=true"), tmp_path / "compiled", resume=None)
    rel = 1e-4 if not torch.cuda.is_available() else 2e-3  # bf16 on a GPU: fused kernels round differently
    for step in range(3):
        assert compiled.losses[step] == pytest.approx(plain.losses[step], rel=rel, abs=1e-5), step
    keys = list(load_checkpoint(compiled.checkpoint)["model"])
    assert keys == list(load_checkpoint(plain.checkpoint)["model"])
    assert not any("_orig_mod" in k for k in keys)
