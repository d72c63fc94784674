"""Runs: submit, list, control (cancel, resume, evaluate), metrics and exports, and the watchdog."""
