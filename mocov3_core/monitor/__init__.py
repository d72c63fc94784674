"""Stability monitor: streaming detectors of gradient spikes, loss spikes, kNN dips and non-finite values."""

from mocov3_core.monitor.detectors import Alert, DipDetector, RobustBaseline, SpikeDetector, StabilityMonitor

__all__ = ["Alert", "DipDetector", "RobustBaseline", "SpikeDetector", "StabilityMonitor"]
