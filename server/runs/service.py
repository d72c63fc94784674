"""What can be done to runs. The Run row is committed before its task is sent (a failed request sends
nothing); a send that fails leaves the run queued for the watchdog to re-send."""

from __future__ import annotations

import copy
import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from sqlmodel import Session, col, select

from mocov3_core.config import MAX_NAME, ConfigError, merge, validate_spec
from mocov3_core.presets import build_spec
from server.auth.service import Caller, get_or_create_project
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import Conflict, NotFound, RunNotFound, SpecInvalid
from server.datasets.resolve import path_refusal, resolve_name, resolve_path
from server.events.bus import EventBus
from server.models import Run, RunBranch, Study
from server.runs import lifecycle, repository
from server.runs.dispatch import Dispatcher
from server.runs.scheduler import Request, impossible
from server.runs.schemas import (
    BranchPublic,
    EvaluateRequest,
    ForkRequest,
    LineageFork,
    LineageParent,
    LineagePublic,
    Resources,
    RunCreate,
    RunDetail,
    RunUpdate,
)
from worker import gang, protocol

log = logging.getLogger(__name__)
CANCEL_FLAG_TTL = timedelta(days=7)


def new_run_id() -> str:
    return secrets.token_hex(6)


def resolve_spec(settings: Settings, kind: str, preset: str | None, overrides: dict[str, Any],
                 base: dict[str, Any] | None, *, session: Session, team_id: int,
                 fork_from: str | None = None) -> dict[str, Any]:
    """defaults -> preset -> base -> overrides, validated by the engine, with `data.name` resolved within team
    `team_id` (server/datasets/resolve.py); SpecInvalid names the field.

    `fork_from` is the checkpoint a fork starts from, resolved by `fork`; a spec that ends up with any other
    (from a client's tree, a study's overrides, anything not resolved here) is refused."""
    if fork_from is not None:
        base = {**(base or {}), "fork_from": fork_from}
    try:
        cfg = build_spec(kind, preset, overrides, base=base)
        spec = cfg.model_dump(mode="json")
        if (spec.get("data") or {}).get("name"):
            resolve_name(session, spec, team_id)
            spec = validate_spec(kind, spec).model_dump(mode="json")
    except ConfigError as exc:
        root = ("body",) if exc.path in ("kind", "preset") else ("body", "spec")
        raise SpecInvalid(exc.path, exc.message, root=root) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # shapes the engine did not expect
        raise SpecInvalid("", f"invalid spec: {exc}") from None
    data_root = (spec.get("data") or {}).get("root")
    if data_root:
        why = path_refusal(settings, resolve_path(settings, data_root), team_id)
        if why is not None:
            raise SpecInvalid("data.root", why)
    if spec.get("fork_from") != fork_from:
        raise SpecInvalid("fork_from", FORK_REFUSAL)
    for field in ("checkpoint", "fork_from"):
        path = spec.get(field)
        if path and not _inside(str(settings.storage_root / path), [settings.storage_root]):
            raise SpecInvalid(field, f"must be inside the storage root {settings.storage_root} (absolute, or "
                              "relative to it)")
    return spec


def storage_relative(path: str, run_id: str) -> str:
    """A checkpoint path as the worker reported it, made relative to the storage root ('runs/<id>/...'), so
    that a worker with the storage mounted elsewhere finds it (it resolves relative paths itself)."""
    marker = f"/runs/{run_id}/"
    at = path.rfind(marker)
    return path[at + 1:] if at >= 0 else path


def _inside(path: str, roots: list[Path]) -> bool:
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(resolved == root or root in resolved.parents for root in roots)


FORK_REFUSAL = ("a fork's checkpoint is not given as a path: POST /runs/{run_id}/fork names the run (and "
                "checkpoint_step for another than the latest)")


def refuse_client_checkpoint(tree: dict[str, Any] | None, root: tuple[str, ...]) -> None:
    """A checkpoint is named by its run (and step), which the server resolves within the caller's teams; a
    path from a client could name another team's run folder, so it is refused wherever a spec tree comes in:
    an evaluation's `checkpoint` and a fork's `fork_from` alike."""
    if tree and "checkpoint" in tree:
        raise SpecInvalid("checkpoint", "a checkpoint is not given as a path: name its pretraining run (run_id, "
                          "and checkpoint_step for another than the latest)", root=root)
    if tree and "fork_from" in tree:
        raise SpecInvalid("fork_from", FORK_REFUSAL, root=root)


RESOURCES = ("body", "resources")


def check_resources(resources: Resources, *, kind: str, spec: dict[str, Any] | None, queue: str,
                    redis_client: redis.Redis | None) -> None:
    """422 at body.resources for a request that cannot run: an evaluation on more than one device, a global
    batch that does not split evenly over the devices, or more than any live agent on `queue` could ever give
    (one device never: the legacy workers of the shared queue serve it)."""
    world = resources.nodes * resources.gpus_per_node
    if world == 1:
        return
    asked = f"{resources.nodes}x{resources.gpus_per_node}"
    if kind != "pretrain":
        raise SpecInvalid("", f"an evaluation ({kind}) runs on one device (1x1), not {asked}", root=RESOURCES)
    optim = (spec or {}).get("optim")
    batch = optim.get("batch_size") if isinstance(optim, dict) else None
    if isinstance(batch, int) and batch % world:
        lower, upper = batch // world * world, (batch // world + 1) * world
        nearest = f"{lower} ({lower // world} per device) or {upper}" if lower else f"{upper}"
        raise SpecInvalid("", f"optim.batch_size {batch} is the global batch and does not split over {world} "
                          f"devices ({asked}): each would need {batch / world:.4g} images; use a multiple of "
                          f"{world}, e.g. {nearest} ({upper // world} per device)", root=RESOURCES)
    if redis_client is not None:
        why = impossible(Request(run_id="", queue=queue, nodes=resources.nodes, gpus_per_node=resources.gpus_per_node),
                         gang.live_agents(redis_client))
        if why is not None:
            raise SpecInvalid("", f"no registered machine can ever run this: it {why}", root=RESOURCES)


def submit(session: Session, *, settings: Settings, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
           body: RunCreate, redis_client: redis.Redis | None = None) -> RunDetail:
    refuse_client_checkpoint(body.spec, ("body", "spec"))
    refuse_client_checkpoint(body.overrides, ("body", "overrides"))
    if body.kind == "pretrain" and (body.run_id is not None or body.checkpoint_step is not None):
        field = "run_id" if body.run_id is not None else "checkpoint_step"
        raise SpecInvalid(field, "only an evaluation (knn, linear, finetune) names a run to read", root=("body",))
    if body.run_id is None and body.checkpoint_step is not None:
        raise SpecInvalid("checkpoint_step", "needs run_id, the run whose checkpoint it is", root=("body",))
    if body.kind != "pretrain" or body.run_id is not None:  # before the parent is looked up: a plain 422
        check_resources(body.resources, kind=body.kind, spec=None, queue=body.queue, redis_client=None)
    if body.run_id is not None:
        parent = get(session, caller=caller, run_id=body.run_id)
        assert caller.user.id is not None
        return new_evaluation(session, settings=settings, dispatcher=dispatcher, bus=bus, parent=parent,
                              kind=body.kind, overrides=body.overrides, base=body.spec, owner_id=caller.user.id,
                              checkpoint_step=body.checkpoint_step, name=body.name, queue=body.queue,
                              tags=body.tags, notes=body.notes)
    team_id = caller.team_id_for(body.team)
    spec = resolve_spec(settings, body.kind, body.preset, body.overrides, body.spec, session=session, team_id=team_id)
    check_resources(body.resources, kind=body.kind, spec=spec, queue=body.queue, redis_client=redis_client)
    project = get_or_create_project(session, team_id=team_id, name=body.project)
    assert project.id is not None and caller.user.id is not None
    run = Run(id=new_run_id(), kind=body.kind, name=body.name or spec.get("name"), spec=spec, status="queued",
              team_id=team_id, project_id=project.id, owner_id=caller.user.id, notes=body.notes, queue=body.queue,
              preset=body.preset, overrides=body.overrides, nodes=body.resources.nodes,
              gpus_per_node=body.resources.gpus_per_node)
    return _enqueue(session, dispatcher, bus, run, body.tags)


def evaluate(session: Session, *, settings: Settings, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
             run_id: str, body: EvaluateRequest) -> RunDetail:
    refuse_client_checkpoint(body.overrides, ("body", "overrides"))
    parent = get(session, caller=caller, run_id=run_id)
    assert caller.user.id is not None
    return new_evaluation(session, settings=settings, dispatcher=dispatcher, bus=bus, parent=parent, kind=body.kind,
                          overrides=body.overrides, owner_id=caller.user.id, checkpoint_step=body.checkpoint_step,
                          name=body.name, queue=body.queue, tags=body.tags)


def new_evaluation(session: Session, *, settings: Settings, dispatcher: Dispatcher, bus: EventBus | None, parent: Run,
                   kind: str, overrides: dict[str, Any], owner_id: int, checkpoint_step: int | None = None,
                   name: str | None = None, queue: str | None = None, tags: list[str] | None = None,
                   base: dict[str, Any] | None = None, notes: str = "") -> RunDetail:
    """An evaluation run of `parent`'s checkpoint (its latest, or the one at `checkpoint_step`), queued in the
    parent's team and project. The checkpoint path is only ever the one resolved here (the caller checked that
    `parent` is one of its teams'); `overrides` and `base` must not carry one."""
    if kind == "pretrain":
        raise SpecInvalid("kind", "an evaluation is knn, linear or finetune", root=("body",))
    if "checkpoint" in overrides or (base and "checkpoint" in base):  # a study's stored overrides, say
        raise SpecInvalid("checkpoint", "a checkpoint is named by its run, not by a path", root=("body", "overrides"))
    refuse_client_checkpoint(overrides, ("body", "overrides"))
    if parent.kind != "pretrain":
        raise Conflict(f"run {parent.id} is a {parent.kind} run; only pretraining runs are evaluated")
    ckpt = repository.checkpoint_at(session, run_id=parent.id, step=checkpoint_step)
    if ckpt is None:
        which = f"at step {checkpoint_step}" if checkpoint_step is not None else "yet"
        raise Conflict(f"run {parent.id} has no checkpoint {which}")
    spec = resolve_spec(settings, kind, None, overrides,
                        {**(base or {}), "checkpoint": storage_relative(ckpt.path, parent.id)},
                        session=session, team_id=parent.team_id)
    # the default name is capped like any name: "finetune of " + a 200-character name overflowed the column
    default_name = f"{kind} of {parent.name or parent.id}"[:MAX_NAME]
    run = Run(id=new_run_id(), kind=kind, name=name or default_name,
              spec=spec, status="queued", team_id=parent.team_id, project_id=parent.project_id, notes=notes,
              owner_id=owner_id, queue=queue or parent.queue, parent_run_id=parent.id, parent_step=ckpt.step,
              checkpoint=spec["checkpoint"], study_id=parent.study_id, study_values=dict(parent.study_values),
              overrides=overrides)
    return _enqueue(session, dispatcher, bus, run, list(tags or []))


def fork(session: Session, *, settings: Settings, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
         redis_client: redis.Redis | None, run_id: str, body: ForkRequest) -> RunDetail:
    """A new pretraining run from a checkpoint of `run_id` (its latest, or the one at body.checkpoint_step), in
    its team and project: the parent's spec, then body.spec, then body.overrides, validated like a new run's,
    with `fork_from` the checkpoint's path as resolved here (never a client's). The engine loads weights,
    optimizer, rng and monitor state and the step from it and goes on with the fork's own settings."""
    refuse_client_checkpoint(body.spec, ("body", "spec"))
    refuse_client_checkpoint(body.overrides, ("body", "overrides"))
    parent = get(session, caller=caller, run_id=run_id)
    if parent.kind != "pretrain":
        raise Conflict(f"run {parent.id} is a {parent.kind} run; only pretraining runs are forked")
    ckpt = repository.checkpoint_at(session, run_id=parent.id, step=body.checkpoint_step)
    if ckpt is None:
        which = f"at step {body.checkpoint_step}" if body.checkpoint_step is not None else "yet"
        raise Conflict(f"run {parent.id} has no checkpoint {which}")
    path = storage_relative(ckpt.path, parent.id)
    if _deleted(settings, parent.id, path):
        raise Conflict(f"run {parent.id}'s checkpoint at step {ckpt.step} is no longer kept (the engine keeps the "
                       "last train.keep_checkpoints and the last healthy one); fork from a later one")
    base = merge(copy.deepcopy(parent.spec), copy.deepcopy(body.spec)) if body.spec else copy.deepcopy(parent.spec)
    base.pop("fork_from", None)  # a fork of a fork starts from its own parent's checkpoint
    spec = resolve_spec(settings, "pretrain", None, body.overrides, base, session=session, team_id=parent.team_id,
                        fork_from=path)
    resources = body.resources or Resources(nodes=parent.nodes, gpus_per_node=parent.gpus_per_node)
    queue = body.queue or parent.queue
    check_resources(resources, kind="pretrain", spec=spec, queue=queue, redis_client=redis_client)
    assert caller.user.id is not None
    run = Run(id=new_run_id(), kind="pretrain", name=body.name or f"fork of {parent.name or parent.id} @{ckpt.step}"
              [:MAX_NAME], spec=spec, status="queued", team_id=parent.team_id, project_id=parent.project_id,
              owner_id=caller.user.id, notes=body.notes, queue=queue, parent_run_id=parent.id, parent_step=ckpt.step,
              preset=parent.preset, overrides={**parent.overrides, **body.overrides}, nodes=resources.nodes,
              gpus_per_node=resources.gpus_per_node)
    return _enqueue(session, dispatcher, bus, run, body.tags)


def _deleted(settings: Settings, run_id: str, path: str) -> bool:
    """Is the checkpoint file gone, as far as this server can tell? Only where it sees the run's folder (the
    storage mounted here, as on one machine); elsewhere the worker finds out, and the fork fails saying so."""
    try:
        return (settings.storage_root / "runs" / run_id).is_dir() and not (settings.storage_root / path).is_file()
    except OSError:
        return False


def queue_followups(session: Session, *, settings: Settings, dispatcher: Dispatcher, bus: EventBus | None,
                    eval_overrides: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[str]:
    """Queue the evaluations that succeeded pretraining runs asked for (a study's); -> the new runs' ids.
    Marked done in the transaction that stores the first of them, so a restarted server never queues twice."""
    created: list[str] = []
    runs = session.exec(select(Run).where(col(Run.followups_pending).is_(True), Run.status == "succeeded")
                        .order_by(col(Run.finished_at)).limit(100)).all()
    for parent in runs:
        parent.followups_pending = False
        session.add(parent)
        study = session.get(Study, parent.study_id) if parent.study_id else None
        if study is not None and study.cancelled_at is not None:  # the study was cancelled: nothing more for it
            session.commit()
            continue
        overrides = _study_eval_overrides(session, parent, eval_overrides)
        for kind in parent.followups:
            try:
                run = new_evaluation(session, settings=settings, dispatcher=dispatcher, bus=bus, parent=parent,
                                     kind=kind, overrides=overrides.get(kind, {}), owner_id=parent.owner_id)
            except (Conflict, SpecInvalid) as exc:  # e.g. no checkpoint: nothing to evaluate
                log.warning("run %s: follow-up %s not queued: %s", parent.id, kind, exc)
                session.add(parent)
                session.commit()
                continue
            created.append(run.id)
        session.commit()
    return created


def _study_eval_overrides(session: Session, parent: Run, cache: dict[str, dict[str, dict[str, Any]]] | None,
                          ) -> dict[str, dict[str, Any]]:
    if not parent.study_id:
        return {}
    if cache is not None and parent.study_id in cache:
        return cache[parent.study_id]
    study = session.get(Study, parent.study_id)
    found = dict(study.eval_overrides) if study is not None else {}
    if cache is not None:
        cache[parent.study_id] = found
    return found


def dispatch(session: Session, dispatcher: Dispatcher, run: Run) -> bool:
    """Send the committed run's task; record it. False (run left queued, unsent) when the broker is down.

    A run asking for more than one device, or whose queue a live agent serves, is the scheduler's instead
    (server/runs/gangs.py): it stays queued, unsent, until the scheduler places it on agents."""
    if run.nodes * run.gpus_per_node > 1 or dispatcher.agents_serve(run.queue):
        if run.wait_reason is None:
            run.wait_reason = "waiting for the scheduler"
            session.add(run)
            session.commit()
        return True
    try:
        tid = dispatcher.send(run.id, run.kind, run.spec, run.attempt, run.queue)
    except Exception as exc:
        log.warning("run %s: sending attempt %d failed (%s); the watchdog will re-send", run.id, run.attempt, exc)
        return False
    run.task_id, run.dispatched_at = tid, utcnow()
    session.add(run)
    session.commit()
    return True


def get(session: Session, *, caller: Caller, run_id: str) -> Run:
    run = repository.get_run(session, run_id=run_id, team_ids=caller.team_ids)
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    return run


def get_branch(session: Session, *, caller: Caller, run_id: str, branch: int) -> RunBranch:
    get(session, caller=caller, run_id=run_id)
    row = session.get(RunBranch, (run_id, branch))
    if row is None:
        raise NotFound(f"run {run_id} has no branch {branch}")
    return row


def lineage(session: Session, *, caller: Caller, run_id: str) -> LineagePublic:
    run = get(session, caller=caller, run_id=run_id)
    parent = repository.get_run(session, run_id=run.parent_run_id, team_ids=caller.team_ids) \
        if run.parent_run_id else None
    return LineagePublic(
        parent=LineageParent(id=parent.id, name=parent.name, step=run.parent_step) if parent else None,
        forks=[LineageFork(id=f.id, name=f.name, status=f.status, step=f.parent_step)
               for f in repository.forks_of(session, run_id=run.id)],
        branches=[BranchPublic.model_validate(b, from_attributes=True)
                  for b in repository.branches_of(session, run_id=run.id)])


def update(session: Session, *, caller: Caller, bus: EventBus | None, run_id: str, body: RunUpdate) -> RunDetail:
    run = get(session, caller=caller, run_id=run_id)
    if body.name is not None:
        run.name = body.name
    if body.notes is not None:
        run.notes = body.notes
    if body.tags is not None:
        repository.set_tags(session, run_id=run.id, tags=body.tags)
    session.add(run)
    session.commit()
    publish_run(session, bus, run)
    return repository.to_detail(session, run)


def cancel(session: Session, *, caller: Caller, redis_client: redis.Redis, dispatcher: Dispatcher,
           bus: EventBus | None, run_id: str) -> RunDetail:
    """Cooperative: the worker sees the flag at its next step. A run not started yet is cancelled at once."""
    run = get(session, caller=caller, run_id=run_id)
    if run.status in lifecycle.TERMINAL:
        if run.status == "cancelled":
            return repository.to_detail(session, run)
        raise Conflict(f"run {run_id} already {run.status}")
    redis_client.set(protocol.cancel_key(run.id), "1", ex=CANCEL_FLAG_TTL)
    now = utcnow()
    run.cancel_requested, run.cancel_requested_at = True, now
    if lifecycle.allowed(run.status, "cancelled", "cancel"):  # not started yet: nothing to wait for
        lifecycle.transition(run, "cancelled", "cancel", reason="cancelled before it started", at=now)
    session.add(run)
    session.commit()
    if run.status == "cancelled" and run.task_id:
        try:
            dispatcher.revoke(run.task_id)
        except Exception as exc:  # the flag already stops it; revoke only saves a worker the start
            log.warning("run %s: revoke failed: %s", run.id, exc)
    publish_run(session, bus, run)
    return repository.to_detail(session, run)


def resume(session: Session, *, caller: Caller, redis_client: redis.Redis, dispatcher: Dispatcher,
           bus: EventBus | None, run_id: str) -> RunDetail:
    """Queue a finished-but-unsuccessful run again: same id, next attempt, from its latest checkpoint."""
    run = get(session, caller=caller, run_id=run_id)
    if not lifecycle.allowed(run.status, "queued", "resume"):
        resumable = ", ".join(s for s in lifecycle.STATUSES if lifecycle.allowed(s, "queued", "resume"))
        raise Conflict(f"run {run_id} is {run.status}; only {resumable} runs resume")
    redis_client.delete(protocol.cancel_key(run.id))
    lifecycle.requeue(run, "resume", "resumed")
    session.add(run)
    session.commit()
    dispatch(session, dispatcher, run)
    publish_run(session, bus, run)
    return repository.to_detail(session, run)


def publish_run(session: Session, bus: EventBus | None, run: Run) -> None:
    """A run's new state to the team stream and the run's own stream (a `RunChanged`: no seq)."""
    if bus is None:
        return
    public = repository.to_public(session, [run])[0].model_dump(mode="json")
    bus.publish_team("run", run.team_id, public)
    bus.publish_run_changed(run.id, public)


def _enqueue(session: Session, dispatcher: Dispatcher, bus: EventBus | None, run: Run, tags: list[str]) -> RunDetail:
    """Commit the queued run with its tags first, and only then send its task and announce it."""
    session.add(run)
    session.flush()
    repository.set_tags(session, run_id=run.id, tags=tags)
    session.commit()
    dispatch(session, dispatcher, run)
    publish_run(session, bus, run)
    return repository.to_detail(session, run)
