"""The team's evaluated models, best first, per protocol and dataset, with the pretraining settings that
produced each (those that differ from the defaults); exported as CSV and Markdown."""

from __future__ import annotations

import csv
import io
from functools import cache
from typing import Any

from sqlmodel import Session, col, select

from mocov3_core.presets import build_spec
from server.auth.service import Caller
from server.core.spreadsheet import cell
from server.models import EvalResult, Project, Run, User
from server.studies.schemas import LeaderboardRow

PROTOCOLS = ("knn", "linear", "finetune")
SKIP = frozenset({"name", "kind"})


@cache
def _defaults(kind: str) -> dict[str, Any]:
    return flatten(build_spec(kind).model_dump(mode="json"))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def config_diff(spec: dict[str, Any], kind: str = "pretrain") -> dict[str, Any]:
    defaults = _defaults(kind)
    return {k: v for k, v in flatten(spec).items() if k not in SKIP and defaults.get(k, object()) != v}


def rows(session: Session, *, caller: Caller, protocol: str | None, dataset: str | None, project: str | None,
         limit: int) -> list[LeaderboardRow]:
    query = select(Run).where(col(Run.team_id).in_(caller.team_ids), Run.status == "succeeded",
                              col(Run.kind).in_([protocol] if protocol else PROTOCOLS))
    if project:
        query = query.where(col(Run.project_id).in_(select(Project.id).where(Project.name == project)))
    evals = [r for r in session.exec(query) if getattr(r, f"best_{r.kind}_top1", None) is not None]
    parents = {r.id: r for r in session.exec(select(Run).where(
        col(Run.id).in_({r.parent_run_id for r in evals if r.parent_run_id})))}
    top5: dict[str, float | None] = {}
    for run_id, t1, t5 in session.exec(select(EvalResult.run_id, EvalResult.top1, EvalResult.top5).where(
            col(EvalResult.run_id).in_([r.id for r in evals])).order_by(col(EvalResult.seq))):
        if t1 is not None:
            top5[run_id] = t5  # the last result's; its top-1 is the run's best unless it evaluated twice
    projects = dict(session.exec(select(Project.id, Project.name)
                                 .where(col(Project.id).in_({r.project_id for r in evals}))).all())
    owners = dict(session.exec(select(User.id, User.name).where(
        col(User.id).in_({r.owner_id for r in evals} | {r.owner_id for r in parents.values()}))).all())
    out: list[LeaderboardRow] = []
    for run in evals:
        data = run.spec.get("data") if isinstance(run.spec.get("data"), dict) else {}
        ds = data.get("dataset") if isinstance(data, dict) else None
        if dataset and ds != dataset:
            continue
        parent = parents.get(run.parent_run_id or "")
        source = parent or run
        model = (source.spec.get("model") or {}) if isinstance(source.spec.get("model"), dict) else {}
        out.append(LeaderboardRow(
            rank=0, protocol=run.kind, dataset=ds, top1=float(getattr(run, f"best_{run.kind}_top1")),
            top5=top5.get(run.id),
            eval_run_id=run.id, pretrain_run_id=parent.id if parent else None,
            name=(parent.name if parent else run.name), model=model.get("arch"),
            framework=parent.spec.get("framework") if parent else None,
            project=projects.get(run.project_id, ""), owner=owners.get(source.owner_id, ""),
            study_id=source.study_id, config=config_diff(parent.spec) if parent else {},
            finished_at=run.finished_at))
    out.sort(key=lambda r: (r.protocol, r.dataset or "", -r.top1, r.eval_run_id))
    group: tuple[str, str] | None = None
    rank = 0
    for row in out:
        rank = rank + 1 if group == (row.protocol, row.dataset or "") else 1
        group = (row.protocol, row.dataset or "")
        row.rank = rank
    return out[:limit]


def _config_text(config: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in sorted(config.items()))



def to_csv(data: list[LeaderboardRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["protocol", "dataset", "rank", "top1", "name", "model", "framework", "config", "owner",
                     "project", "eval_run_id", "pretrain_run_id", "study_id", "finished_at"])
    for r in data:
        text = [r.name or "", r.model or "", r.framework or "", _config_text(r.config), r.owner, r.project,
                r.eval_run_id, r.pretrain_run_id or "", r.study_id or ""]
        writer.writerow([cell(r.protocol), cell(r.dataset or ""), r.rank, f"{r.top1:.2f}", *map(cell, text),
                         r.finished_at.isoformat() if r.finished_at else ""])
    return buf.getvalue()


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(data: list[LeaderboardRow]) -> str:
    lines: list[str] = []
    group: tuple[str, str] | None = None
    for r in data:
        if group != (r.protocol, r.dataset or ""):
            group = (r.protocol, r.dataset or "")
            lines += ["" if lines else "", f"### {r.protocol} on {r.dataset or 'unknown data'}", "",
                      "| # | top-1 | run | model | framework | settings (vs defaults) | owner |",
                      "|---|---|---|---|---|---|---|"]
        lines.append(f"| {r.rank} | {r.top1:.2f} | {_md(r.name or r.pretrain_run_id or r.eval_run_id)} | "
                     f"{_md(r.model or '')} | {_md(r.framework or '')} | {_md(_config_text(r.config))} | "
                     f"{_md(r.owner)} |")
    return "\n".join(lines).strip() + "\n" if lines else "No evaluated models yet.\n"
