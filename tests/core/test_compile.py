"""train.compile for every framework: the same losses as the plain model, checkpoint keys without `_orig_mod.`,
resume across compiled and plain runs in both directions, and no recompilation from step to step.

Dynamo traces every framework's encoders here and AOTAutograd builds their backward, with the `aot_eager`
backend (`loop.TEST_COMPILE_BACKEND`): inductor's C++ code generation for the four frameworks takes about a
minute on a 2-core CPU (measured: 57 s for 3 steps of each, against 11 s with aot_eager). Inductor itself
runs in tests/core/test_loop.py (MoCo v3) and, on a GPU machine, in bench/gpu_check.sh.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch._dynamo

import mocov3_core.train.loop as loop
from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.system import restore_tf32, set_tf32, tf32_enabled
from mocov3_core.train import Pretrainer, load_checkpoint, pretrain
from mocov3_core.train.loop import compile_enabled

pytestmark = pytest.mark.fmnist

TINY = ["data.limit=512", "optim.batch_size=32", "train.log_every=2", "train.ckpt_every=100",
        "monitor.knn_every=0", "optim.epochs=2"]
PRESETS = {"mocov3": "fmnist_tiny", "simclr": "fmnist_tiny_simclr", "byol": "fmnist_tiny_byol",
           "swav": "fmnist_tiny_swav"}


@pytest.fixture(autouse=True)
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(loop, "TEST_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def spec(framework: str, *extra: str):  # noqa: ANN201
    return build_spec("pretrain", PRESETS[framework], [*TINY, *extra])


def test_auto_compiles_on_cuda_only_and_the_booleans_still_parse() -> None:
    assert compile_enabled("auto", torch.device("cuda")) and not compile_enabled("auto", torch.device("cpu"))
    assert compile_enabled(True, torch.device("cpu")) and not compile_enabled(False, torch.device("cuda"))
    assert spec("mocov3").train.compile == "auto"  # the default
    assert spec("mocov3", "train.compile=true").train.compile is True  # --set, as before
    assert spec("mocov3", "train.compile=false").train.compile is False
    assert spec("mocov3", "train.compile=auto").train.compile == "auto"


def test_auto_on_the_cpu_leaves_the_encoders_plain(tmp_path: Path) -> None:
    trainer = Pretrainer(spec("mocov3"), tmp_path)
    assert not trainer.compiled
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in trainer.model.modules())


@pytest.mark.parametrize("framework", list(PRESETS))
def test_every_framework_compiles_to_the_same_losses_and_checkpoint_keys(framework: str, tmp_path: Path) -> None:
    plain = pretrain(spec(framework, "train.max_steps=3"), tmp_path / "plain", resume=None)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    sink = ListSink()
    compiled = pretrain(spec(framework, "train.max_steps=3", "train.compile=true"), tmp_path / "compiled",
                        sinks=[sink], resume=None)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # dynamo did trace the encoders
    assert sink.of_type("config")[0].payload["compiled"] is True
    for step in range(3):
        assert compiled.losses[step] == pytest.approx(plain.losses[step], rel=1e-4, abs=1e-6), step
    assert compiled.checkpoint and plain.checkpoint
    keys = list(load_checkpoint(compiled.checkpoint)["model"])
    assert keys == list(load_checkpoint(plain.checkpoint)["model"])
    assert not any("_orig_mod" in k for k in keys)


@pytest.mark.parametrize("first", ["plain", "compiled"])
def test_resume_across_compiled_and_plain_runs_continues_the_same_losses(first: str, tmp_path: Path) -> None:
    """A compiled run resumes from a plain run's checkpoint and a plain run from a compiled one (MoCo v3: two
    compiled encoders, the momentum one included)."""
    full = pretrain(spec("mocov3", "train.max_steps=6"), tmp_path / "full", resume=None)
    compile_first, compile_then = ("train.compile=true", "train.compile=false")[:: 1 if first == "compiled" else -1]
    calls = {"n": 0}

    def stop_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    head = pretrain(spec("mocov3", "train.max_steps=6", compile_first), tmp_path / "run", resume=None,
                    should_stop=stop_after_3)
    assert head.status == "stopped" and head.step == 3
    tail = pretrain(spec("mocov3", "train.max_steps=6", compile_then), tmp_path / "run", resume="auto")
    assert tail.status == "succeeded" and tail.run_id == head.run_id
    for step in range(3, 6):
        assert tail.losses[step] == pytest.approx(full.losses[step], rel=1e-4, abs=1e-6), step


def test_the_compiled_step_does_not_recompile_as_lr_and_momentum_change(tmp_path: Path) -> None:
    """lr and m change every step (warm-up, cosine) and are Python floats: they must stay outside the compiled
    graphs, or every step would recompile (and past dynamo's cache limit silently run uncompiled)."""
    trainer = Pretrainer(spec("mocov3", "train.compile=true", "optim.warmup_epochs=1"), tmp_path)
    trainer.model.train()
    counters = torch._dynamo.utils.counters
    for step in range(2):
        trainer.train_step(step)
    graphs, frames = counters["stats"]["unique_graphs"], counters["frames"]["total"]
    assert graphs >= 2  # the online encoder with gradient, the momentum encoder without
    rates = set()
    for step in range(2, 10):
        _, lr, m = trainer.train_step(step)
        rates.add((lr, m))
    assert len(rates) == 8  # lr and m really changed every step
    # dynamo converts a frame only on a cache miss: a recompile would count here (up to its cache limit of 8)
    assert counters["frames"]["total"] == frames
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_step_never_waits_for_the_gpu_and_reports_mfu(compiled: bool, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU (inductor, as runs use it): train.compile=auto compiles, no step syncs the host with the device
    once compiled, and the metrics carry TFLOP/s and the MFU against the GPU's peak when it is a known one."""
    monkeypatch.setattr(loop, "TEST_COMPILE_BACKEND", None)
    before = set_tf32(True)
    try:
        trainer = Pretrainer(spec("mocov3", "train.compile=auto" if compiled else "train.compile=false"), tmp_path)
        assert trainer.device.type == "cuda" and trainer.compiled == compiled and trainer.step_flops
        trainer.model.train()
        for step in range(3):
            trainer.train_step(step)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            pending = [(step, trainer.train_step(step)) for step in range(3, 6)]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        sink = ListSink()
        trainer.emitter.sinks = [sink]
        trainer.readback(pending, 0.5)
        last = sink.of_type("metrics")[-1].payload["values"]
        assert last["tflops"] > 0 and ("mfu" in last) == (trainer.peak is not None)
    finally:
        restore_tf32(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_runs_on_tf32_and_fp32_strict_does_not(tmp_path: Path) -> None:
    before = set_tf32(False)
    try:
        Pretrainer(spec("mocov3", "train.precision=fp32", "train.compile=false"), tmp_path / "a")
        assert tf32_enabled() and torch.backends.cudnn.allow_tf32
        strict = Pretrainer(spec("mocov3", "train.precision=fp32-strict", "train.compile=false"), tmp_path / "b")
        assert strict.precision == "fp32-strict" and strict.scaler is None
        assert not tf32_enabled() and not torch.backends.cudnn.allow_tf32
        result = pretrain(spec("mocov3", "train.precision=fp32-strict", "train.max_steps=2"), tmp_path / "c",
                          resume=None)
        assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    finally:
        restore_tf32(before)
