"""Stability monitor: streaming detectors of gradient spikes, loss spikes, kNN dips and non-finite values."""

from mocov3_core.monitor.detectors import (
    Alert,
    DipDetector,
    DropDetector,
    RobustBaseline,
    SpikeDetector,
    StabilityMonitor,
)

__all__ = ["Alert", "DipDetector", "DropDetector", "RobustBaseline", "SpikeDetector", "StabilityMonitor"]
