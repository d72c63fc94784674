"""What a caller may see of a shared worker: the workers are every team's, their runs are not. A run id (and
its step) in a worker's row, heartbeat or stream item is shown only to a member of the run's team; any run
the caller cannot see is blanked, so a run whose team is unknown is hidden too."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def runs_named(telemetry: dict[str, Any]) -> set[str]:
    """The run ids a heartbeat's payload names (its current run and every run it executes)."""
    ids = {telemetry["run_id"]} if isinstance(telemetry.get("run_id"), str) else set()
    for r in telemetry.get("runs") or []:
        if isinstance(r, dict) and isinstance(r.get("run_id"), str):
            ids.add(r["run_id"])
    for slot in _slots(telemetry):
        if isinstance(slot.get("run_id"), str):
            ids.add(slot["run_id"])
    return ids


def _slots(telemetry: dict[str, Any]) -> list[dict[str, Any]]:
    """An agent's device slots ({device, run_id, attempt}: worker/gang.py), or [] for any other payload."""
    agent = telemetry.get("agent")
    slots = agent.get("slots") if isinstance(agent, dict) else None
    return [s for s in slots if isinstance(s, dict)] if isinstance(slots, list) else []


def scope_telemetry(telemetry: dict[str, Any], visible: set[str]) -> dict[str, Any]:
    out = dict(telemetry)
    if "run_id" in out and out["run_id"] not in visible:
        out["run_id"] = None
        out["step"] = None
    if isinstance(out.get("runs"), list):
        out["runs"] = [r for r in out["runs"] if isinstance(r, dict) and r.get("run_id") in visible]
    if _slots(out):  # a device another team's run holds stays held, but nameless
        agent = dict(out["agent"])
        agent["slots"] = [s if s.get("run_id") is None or s.get("run_id") in visible
                          else {**s, "run_id": None, "attempt": None, "hidden": True} for s in _slots(out)]
        out["agent"] = agent
    return out


def scope_worker_item(data: dict[str, Any], visible: set[str]) -> dict[str, Any]:
    """A worker's team-stream item ({id, ..., current_run_id, telemetry}) as a caller seeing `visible` gets it."""
    out = dict(data)
    if out.get("current_run_id") not in visible:
        out["current_run_id"] = None
    if isinstance(out.get("telemetry"), dict):
        out["telemetry"] = scope_telemetry(out["telemetry"], visible)
    return out


def visible_of(run_teams: dict[str, int], team_ids: Iterable[int]) -> set[str]:
    teams = set(team_ids)
    return {run_id for run_id, team in run_teams.items() if team in teams}


def scoped_view(data: dict[str, Any], run_teams: dict[str, int]) -> Callable[[frozenset[int]], dict[str, Any]]:
    """A worker item's view per caller for the team stream: `run_teams` gives the team of each run it names."""
    return lambda team_ids: scope_worker_item(data, visible_of(run_teams, team_ids))
