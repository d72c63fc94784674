"""The training loop on real Fashion-MNIST: resume continues the same curve, the frozen tensors stay
frozen, and the stability monitor catches injected faults (and nothing in a clean run)."""

import math
from pathlib import Path

import pytest
import torch

from mocov3_core.events import Event, ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import load_checkpoint, pretrain
from mocov3_core.train.loop import ForkError, Pretrainer
from mocov3_core.train.signals import UPDATE_KEYS

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


# ------------------------------------------------------------------ rollback with data skip, hang, fork
ROLLBACK = ["faults.spike_at_step=20", "faults.spike_scale=1000", "monitor.policy=rollback",
            "monitor.rollback_skip_margin=2", "train.max_steps=32"]


def record_positions(trainer: Pretrainer) -> list[int]:
    """The data positions the run asks its stream for, in order (the real stream serves them)."""
    asked: list[int] = []
    batch = trainer.stream.batch

    def recording(position: int):  # noqa: ANN202
        asked.append(position)
        return batch(position)

    trainer.stream.batch = recording  # type: ignore[method-assign]
    return asked


def test_rollback_skips_the_batches_around_the_spike_and_emits_a_rollback_event(tmp_path: Path) -> None:
    sink = ListSink()
    trainer = Pretrainer(spec(*ROLLBACK), tmp_path / "skip", sinks=[sink])
    positions = record_positions(trainer)
    result = trainer.run(resume=None)
    assert result.status == "succeeded" and result.step == 32
    alert = next(a for a in result.alerts if a["kind"] == "grad_spike")
    assert alert["step"] == 20
    # read back at step 24 (log_every 4): back to the healthy checkpoint 16, positions 16..20+2 skipped
    [event] = sink.of_type("rollback")
    assert event.payload == {"branch": 1, "from_step": 24, "to_step": 16, "alert_kind": "grad_spike",
                             "alert_step": 20, "lr_scale": 0.5, "skipped": [16, 22],
                             "checkpoint": str(tmp_path / "skip" / "checkpoints" / "step_0000016.pt")}
    # emitted before any metrics of the replayed steps: the abandoned curve (16..23) is complete before it
    seqs = {e.seq: e for e in sink.events}
    metrics = [(e.seq, e.payload["step"]) for e in sink.of_type("metrics") if "loss" in e.payload["values"]]
    assert [s for q, s in metrics if q < event.seq] == list(range(24))
    assert [s for q, s in metrics if q > event.seq] == list(range(16, 32))
    assert seqs[event.seq + 1].type == "log" and "positions 16-22 skipped" in seqs[event.seq + 1].payload["message"]
    # the replay saw other batches: positions 23.. instead of 16.., none of the skipped ones
    assert positions[:24] == list(range(24)) and positions[24:] == list(range(23, 39))
    losses = {}
    for e in sink.of_type("metrics"):
        if "loss" in e.payload["values"]:
            losses.setdefault(e.payload["step"], []).append(e.payload["values"])
    abandoned, replayed = losses[16]
    assert replayed["loss"] != pytest.approx(abandoned["loss"], rel=1e-4)  # same weights, other data
    assert replayed["lr"] == pytest.approx(0.5 * abandoned["lr"])  # and a lower lr
    state = load_checkpoint(result.checkpoint)
    assert state["data_offset"] == 7 and state["rollbacks"] == 1 and state["lr_scale"] == 0.5

    # without the skip, the replay of step 16 sees the abandoned batch again: the same loss from the same weights
    same = ListSink()
    pretrain(spec(*ROLLBACK, "monitor.rollback_skip=false"), tmp_path / "noskip", sinks=[same], resume=None)
    assert same.of_type("rollback")[0].payload["skipped"] is None
    first, again = (e.payload["values"]["loss"] for e in same.of_type("metrics")
                    if e.payload["step"] == 16 and "loss" in e.payload["values"])
    assert again == pytest.approx(first, rel=1e-5)


def test_rollback_stops_the_run_after_max_rollbacks(tmp_path: Path) -> None:
    sink = ListSink()
    result = pretrain(spec("faults.nan_grad_at_step=10", "faults.spike_at_step=20", "faults.spike_scale=1000",
                           "monitor.policy=rollback", "monitor.max_rollbacks=1", "train.max_steps=32"),
                      tmp_path, sinks=[sink], resume=None)
    assert [e.payload["alert_kind"] for e in sink.of_type("rollback")] == ["non_finite"]
    assert result.status == "stopped" and "grad_spike at step 20" in result.reason
    assert result.step < 32


def test_resume_after_a_rollback_continues_with_the_same_data_offset(tmp_path: Path) -> None:
    whole = pretrain(spec(*ROLLBACK), tmp_path / "whole", resume=None)
    calls = {"n": 0}

    def stop_at_step_28() -> bool:  # 24 steps, the rollback to 16, then 16..27
        calls["n"] += 1
        return calls["n"] > 24 + 12

    first = pretrain(spec(*ROLLBACK), tmp_path / "cut", resume=None, should_stop=stop_at_step_28)
    assert first.status == "stopped" and first.step == 28
    assert load_checkpoint(first.checkpoint)["data_offset"] == 7
    second = pretrain(spec(*ROLLBACK), tmp_path / "cut", resume="auto")
    assert second.status == "succeeded"
    for step in range(28, 32):
        assert second.losses[step] == pytest.approx(whole.losses[step], rel=1e-5, abs=1e-6), step


def test_injected_hang_blocks_the_loop_ignores_a_stop_and_does_not_fire_again_after_a_restore(
        tmp_path: Path) -> None:
    stop = {"asked": False}

    class StopOnHang(ListSink):
        def write(self, event: Event) -> None:
            super().write(event)
            if event.type == "log" and "hanging" in event.payload["message"]:
                stop["asked"] = True  # a stop asked for while the loop is blocked

    sink = StopOnHang()
    cfg = spec("faults.hang_at_step=5", "faults.hang_s=1", "train.max_steps=8")
    result = pretrain(cfg, tmp_path, sinks=[sink], resume=None, should_stop=lambda: stop["asked"])
    # asked for at once, the stop was honoured only once the hang was over: before step 5, hang_s later
    assert result.status == "stopped" and result.step == 5 and 5 not in result.losses
    hang = next(e for e in sink.of_type("log") if "hanging" in e.payload["message"])
    stopped = sink.of_type("status")[-1]
    assert stopped.payload["state"] == "stopped" and stopped.time - hang.time >= 1.0  # a sleep never returns early
    # its checkpoint, written before blocking, records the fault: a restart from it does not hang again
    ckpt = tmp_path / "checkpoints" / "step_0000005.pt"
    assert load_checkpoint(ckpt)["faults_fired"] == ["hang"]
    again = ListSink()
    resumed = pretrain(cfg, tmp_path / "again", sinks=[again], resume=ckpt)
    assert resumed.status == "succeeded" and resumed.step == 8
    assert not any("hanging" in e.payload["message"] for e in again.of_type("log"))


def test_fork_continues_from_the_parents_checkpoint_with_its_own_config(tmp_path: Path) -> None:
    parent = pretrain(spec("train.max_steps=16"), tmp_path / "parent", resume=None)
    ckpt = tmp_path / "parent" / "checkpoints" / "step_0000008.pt"
    sink = ListSink()
    cfg = spec("train.max_steps=16", "optim.base_lr=5e-3", f"fork_from={ckpt}")
    fork = pretrain(cfg, tmp_path / "fork", sinks=[sink], resume="auto")
    assert fork.status == "succeeded" and fork.run_id != parent.run_id
    assert sink.events[0].seq == 0 and all(e.run_id == fork.run_id for e in sink.events)
    assert any(f"forked from {ckpt}" in e.payload["message"] for e in sink.of_type("log"))
    steps = [e.payload["step"] for e in sink.of_type("metrics") if "loss" in e.payload["values"]]
    assert steps == list(range(8, 16))
    # step 8's loss is the parent's own: its weights, RNG and data (a fresh init would give another value)
    assert fork.losses[8] == pytest.approx(parent.losses[8], rel=1e-5, abs=1e-6)
    lrs = {e.payload["step"]: e.payload["values"]["lr"] for e in sink.of_type("metrics") if "lr" in e.payload["values"]}
    parent_lr = load_checkpoint(ckpt)["optimizer"]["param_groups"][0]["lr"]
    assert lrs[8] > 2 * parent_lr  # the fork's own (higher) lr schedule from its first step
    assert fork.losses[9] != pytest.approx(parent.losses[9], rel=1e-4)
    state = load_checkpoint(fork.checkpoint)
    assert state["run_id"] == fork.run_id and state["lr_scale"] == 1.0 and state["config"]["fork_from"] == str(ckpt)


def test_fork_from_a_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ForkError, match=r"fork_from: checkpoint not found: .*nowhere\.pt"):
        pretrain(spec("train.max_steps=4", f"fork_from={tmp_path / 'nowhere.pt'}"), tmp_path / "fork", resume=None)


def test_a_vit_run_emits_the_collapse_signals_at_each_knn_evaluation(tmp_path: Path) -> None:
    sink = ListSink()
    pretrain(spec("train.max_steps=8", "monitor.knn_every=4"), tmp_path, sinks=[sink], resume=None)
    evals = [e.payload for e in sink.of_type("metrics") if "rankme" in e.payload["values"]]
    assert [e["step"] for e in evals] == [3, 7]
    for e in evals:
        v = e["values"]
        assert set(v) == {"knn_top1", "rankme", "feat_std", "attn_entropy/first_block", "attn_entropy/last_block"}
        assert 1.0 <= v["rankme"] <= 64 and 0.0 < v["feat_std"] < 1.0
        assert 0.0 < v["attn_entropy/first_block"] < math.log(17)  # 16 patches + the class token
    steps = [e.payload["values"] for e in sink.of_type("metrics") if "loss" in e.payload["values"]]
    assert all(set(UPDATE_KEYS) <= set(v) for v in steps)
    assert all(v["update_ratio/patch_proj"] == 0.0 for v in steps)  # the frozen random patch projection
    assert all(v["update_ratio/heads"] > 0.0 for v in steps[1:])  # (step 0 runs at lr 0: the warmup's start)
