"""`mocolab`: the one command of the project.

    mocolab up                 embedded Redis + SQLite + server + one worker, on this machine
    mocolab demo [--exit-when-done]   the same, plus a small real run on Fashion-MNIST and its evaluations
    mocolab worker --queue Q [--gpu N | --gpus all|0,1,3|cpu:N]
    mocolab admin ...          users, teams, tokens
    mocolab submit [--gpus N] [--nodes N] | runs | show | cancel | logs     the REST API, for scripts
    mocolab fork RUN_ID [--step N] [--set k=v ...] [--name ..] [--wait]     a new run from a run's checkpoint
    mocolab datasets list | show NAME | add NAME PATH | prepare NAME | rm NAME   the team's datasets
    mocolab channels list | add NAME --kind K ... | test ID | log ID | rm ID   notification channels
    mocolab engine ...         the engine's own CLI (python -m mocov3_core)

Bad input is one line on stderr and exit status 2. `up` and `demo` read MOCOLAB_STATE, MOCOLAB_HOST,
MOCOLAB_PORT and MOCOLAB_GPU when their flag is not given (a flag wins). Text from the server is printed
without escape sequences (`terminal.safe`): a run's name cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

from server.runs.lifecycle import TERMINAL  # standard library only: no server runtime comes with it

from .channels import add_parser as channels_parser
from .channels import run as channels_command
from .client import Client, ClientError
from .datasets import add_parser as datasets_parser
from .datasets import run as datasets_command
from .terminal import safe


def _env(name: str, default: str | None) -> str | None:
    """A flag's default from the environment (a flag given on the command line wins)."""
    return os.environ.get(name, "").strip() or default


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535 (from --port or MOCOLAB_PORT), got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mocolab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("up", "run the whole stack on this machine"),
                       ("demo", "run the stack and a small real MoCo v3 run with its evaluations")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", default=_env("MOCOLAB_HOST", "127.0.0.1"), help="bind address (loopback: a "
                       "login URL is printed; any other address: nothing answers without a token; default: "
                       "MOCOLAB_HOST, else 127.0.0.1)")
        p.add_argument("--port", type=_port, default=_env("MOCOLAB_PORT", "8000"),
                       help="default: MOCOLAB_PORT, else 8000")
        p.add_argument("--state", default=_env("MOCOLAB_STATE", ".mocolab"), help="folder for the database, Redis "
                       "data, checkpoints; created mode 700 (default: MOCOLAB_STATE, else .mocolab)")
        p.add_argument("--no-worker", action="store_true", help="start no local worker")
        p.add_argument("--gpu", default=_env("MOCOLAB_GPU", None),
                       help="GPU index for the local worker (default: MOCOLAB_GPU, else the first, if any)")
        p.add_argument("--gpus", default=None, metavar="all|0,1|cpu:N",
                       help="start the local worker as an agent owning these devices (runs of 1 to N GPUs)")
        if name == "demo":
            p.add_argument("--exit-when-done", action="store_true",
                           help="wait for the demo's runs, print their results and exit (0 when all succeeded)")
            p.add_argument("--preset", default="fmnist_small", help="pretraining preset of the demo run")
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("worker", add_help=False,
                       help="start a worker: --gpu N (one GPU, the shared queue) or --gpus all|0,1|cpu:N (an agent)")
    p.add_argument("worker_args", nargs=argparse.REMAINDER, help="python -m worker's options (see --help)")
    p = sub.add_parser("admin", help="users, teams and tokens")
    p.add_argument("admin_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("submit", help="submit a run")
    p.add_argument("--kind", default="pretrain", choices=["pretrain", "knn", "linear", "finetune"])
    p.add_argument("--preset", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--spec", default=None, help="a JSON file with the whole spec")
    p.add_argument("--run", dest="run_id", default=None,
                   help="an evaluation (--kind knn, linear, finetune): the pretraining run whose checkpoint it reads")
    p.add_argument("--checkpoint-step", type=int, default=None, help="with --run: that step's checkpoint "
                   "(default: the latest)")
    p.add_argument("--project", default=None)
    p.add_argument("--queue", default=None)
    p.add_argument("--tag", dest="tags", action="append", default=[])
    p.add_argument("--name", default=None)
    p.add_argument("--gpus", default=None, metavar="N", help="GPUs on each machine (on one machine: the run's "
                   "GPUs; default 1). optim.batch_size stays the global batch: it must divide by all the GPUs")
    p.add_argument("--nodes", default=None, metavar="N", help="machines (default 1; 1-256)")
    p.add_argument("--gpus-per-node", default=None, metavar="N", help="with --nodes: the same as --gpus")
    p.add_argument("--wait", action="store_true", help="show the run's progress until it ends")
    p = sub.add_parser("fork", help="a new pretraining run from a checkpoint of another, with changed settings",
                       description="mocolab fork RUN_ID --set optim.base_lr=1e-4 --wait: the run's spec with the "
                       "changes, starting from its latest checkpoint (or --step N's), in its team and project")
    p.add_argument("run_id")
    p.add_argument("--step", dest="checkpoint_step", type=int, default=None,
                   help="the checkpoint's step (default: the latest)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", default=None)
    p.add_argument("--tag", dest="tags", action="append", default=[])
    p.add_argument("--queue", default=None)
    p.add_argument("--wait", action="store_true", help="show the fork's progress until it ends")
    p = sub.add_parser("study", help="create a study (a run per value of one or two settings), or show one",
                       description="mocolab study --name lr --preset fmnist_small --axis optim.base_lr=1e-4,1e-3 "
                       "--eval knn --wait  |  mocolab study --show ID  |  mocolab study --cancel ID  |  "
                       "mocolab study --templates")
    p.add_argument("--name", default=None)
    p.add_argument("--template", default=None, help="one of the paper's comparisons (see --templates)")
    p.add_argument("--templates", action="store_true", help="list the templates and exit")
    p.add_argument("--preset", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--axis", dest="axes", action="append", default=[], metavar="PATH=V1,V2,...",
                   help="a setting and its values (at most two axes)")
    p.add_argument("--axes-json", default=None, help="a JSON file with the axes (values with labels and overrides)")
    p.add_argument("--eval", dest="evaluations", action="append", default=[], choices=["knn", "linear", "finetune"])
    p.add_argument("--eval-set", action="append", default=[], metavar="KIND:KEY=VALUE")
    p.add_argument("--project", default=None)
    p.add_argument("--queue", default=None)
    p.add_argument("--show", default=None, metavar="STUDY_ID", help="print a study's table")
    p.add_argument("--cancel", default=None, metavar="STUDY_ID",
                   help="cancel every run of the study not ended yet; no evaluation is queued after")
    p.add_argument("--wait", action="store_true", help="show progress until every run and evaluation ended")
    p = sub.add_parser("runs", help="list runs")
    for flag in ("status", "kind", "project", "tag", "q"):
        p.add_argument(f"--{flag}", default=None)
    p = sub.add_parser("show", help="one run, with its evaluations")
    p.add_argument("run_id")
    p = sub.add_parser("cancel", help="cancel a run")
    p.add_argument("run_id")
    p = sub.add_parser("logs", help="a run's events")
    p.add_argument("run_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep streaming live events")
    datasets_parser(sub)
    channels_parser(sub)
    p = sub.add_parser("engine", help="the engine's CLI: pretrain, knn, linear, finetune, presets, schema")
    p.add_argument("engine_args", nargs=argparse.REMAINDER)
    return ap


def _overrides(items: list[str]) -> dict[str, Any]:
    from mocov3_core.config import ConfigError, parse_value

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(item, "expected key=value, e.g. optim.base_lr=3e-4")
        key, _, value = item.partition("=")
        out[key.strip()] = parse_value(value.strip())
    return out


def _count(flag: str, text: str | None, most: int) -> int | None:
    """A positive count from the command line (None when the flag is not given); ValueError names the flag."""
    if text is None:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= most:
        raise ValueError(f"{flag} {text!r}: expected a whole number 1-{most}")
    return int(text)


def resources(gpus: str | None, nodes: str | None, gpus_per_node: str | None) -> dict[str, int] | None:
    """--gpus / --nodes / --gpus-per-node -> the request's resources, or None for the server's default (1x1)."""
    per = _count("--gpus", gpus, 64)
    alias = _count("--gpus-per-node", gpus_per_node, 64)
    machines = _count("--nodes", nodes, 256)
    if per is not None and alias is not None and per != alias:
        raise ValueError(f"--gpus {per} and --gpus-per-node {alias} disagree (they are the same setting)")
    per = per if per is not None else alias
    if per is None and machines is None:
        return None
    return {"nodes": machines or 1, "gpus_per_node": per or 1}


def resources_label(run: dict[str, Any]) -> str:
    """'4 GPUs' (one machine), '2x4 GPUs' (machines x GPUs each), '' for one GPU."""
    nodes, per = int(run.get("nodes") or 1), int(run.get("gpus_per_node") or 1)
    if nodes * per == 1:
        return ""
    return f"{per} GPUs" if nodes == 1 else f"{nodes}x{per} GPUs"


def _line(run: dict[str, Any]) -> str:
    best = " ".join(f"{k}={run[k]:.2f}" for k in ("best_knn_top1", "best_linear_top1") if run.get(k) is not None)
    size = resources_label(run)
    waits = f" ({safe(run['wait_reason'])})" if run.get("status") == "queued" and run.get("wait_reason") else ""
    tail = " ".join(part for part in (f"step {run.get('step') or 0}/{run.get('total_steps') or '?'}", best, size)
                    if part)
    return safe(f"{run['id']}  {run['kind']:9s} {run['status']:10s} {safe(run.get('name') or ''):24s} "
                f"{tail}{waits}").rstrip()


def follow(client: Client, run_id: str, echo: bool = True) -> dict[str, Any]:
    """Print a run's events until it reaches a terminal state; -> the run."""
    last = -1
    while True:
        for event in client.events(run_id, after_seq=last):
            last = max(last, int(event["seq"]))
            if echo:
                _echo(event)
        run = client.run(run_id)
        if run["status"] in TERMINAL:
            return run
        time.sleep(1.0)


def _echo(event: dict[str, Any]) -> None:
    p = event.get("payload", {})
    kind = event["type"]
    if kind == "metrics":
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in p.get("values", {}).items() if not k.startswith("grad_norm/"))
        print(safe(f"[{event['seq']:6d}] step {p.get('step')}: {values}"))
    elif kind == "alert":
        print(safe(f"[{event['seq']:6d}] ALERT {p.get('kind')} at step {p.get('step')}: {p.get('message')}"))
    else:
        print(safe(f"[{event['seq']:6d}] {kind}: {json.dumps(p)[:200]}"))


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:  # its options are the worker's own (argparse's REMAINDER refuses a leading option)
        from worker.cli import main as worker_main

        return int(worker_main(argv[1:], prog="mocolab worker") or 0)
    args = _parser().parse_args(argv)
    if args.command == "engine":
        from mocov3_core.cli import run as engine_run

        return engine_run(args.engine_args)
    if args.command in ("up", "demo"):
        from .stack import run_stack

        return run_stack(args)
    if args.command == "admin":
        from server.admin import main as admin_main

        return int(admin_main(args.admin_args) or 0)
    asked = resources(args.gpus, args.nodes, args.gpus_per_node) if args.command == "submit" else None
    client = Client()
    if args.command == "submit":
        body: dict[str, Any] = {"kind": args.kind, "tags": args.tags}
        if asked is not None:
            body["resources"] = asked
        if args.spec:
            with open(args.spec) as fh:
                body["spec"] = json.load(fh)
        if args.preset:
            body["preset"] = args.preset
        if args.overrides:
            body["overrides"] = _overrides(args.overrides)
        for key in ("project", "queue", "name", "run_id", "checkpoint_step"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        created = client.submit(body)
        print(created["id"])
        if args.wait:
            final = _wait_run(client, created)
            print(_line(final))
            if final["status"] != "succeeded" and (final.get("error") or final.get("message")):
                print(safe(final.get("error") or final.get("message")))
            return 0 if final["status"] == "succeeded" else 1
        return 0
    if args.command == "fork":
        return _fork(client, args)
    if args.command == "study":
        return _study(client, args)
    if args.command == "datasets":
        return datasets_command(client, args)
    if args.command == "channels":
        return channels_command(client, args)
    if args.command == "runs":
        page = client.runs(status=args.status, kind=args.kind, project=args.project, tag=args.tag, q=args.q)
        for item in page["data"]:
            print(_line(item))
        print(f"({page['count']} runs)")
        return 0
    if args.command == "show":
        print(json.dumps({**client.run(args.run_id), "evals": client.evals(args.run_id)}, indent=1, default=str))
        return 0
    if args.command == "cancel":
        print(_line(client.cancel(args.run_id)))
        return 0
    if args.command == "logs":
        if args.follow:
            follow(client, args.run_id)
        else:
            for event in client.events(args.run_id):
                _echo(event)
        return 0
    return 2


def _fork(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"tags": args.tags}
    if args.overrides:
        body["overrides"] = _overrides(args.overrides)
    for key in ("checkpoint_step", "name", "queue"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    created = client.post(f"/runs/{quote(args.run_id, safe='')}/fork", body)
    print(created["id"])
    print(safe(f"forked from {args.run_id} at step {created.get('parent_step')}"), file=sys.stderr)
    if not args.wait:
        return 0
    final = _wait_run(client, created)
    print(_line(final))
    if final["status"] != "succeeded" and (final.get("error") or final.get("message")):
        print(safe(final.get("error") or final.get("message")))
    return 0 if final["status"] == "succeeded" else 1


def _study(client: Client, args: argparse.Namespace) -> int:
    if args.templates:
        for t in client.get("/study-templates"):
            described = "; ".join(f"{a['name']}: {', '.join(a['labels'])}" for a in t["axes"])
            print(safe(f"{t['name']:20s} {t['title']} ({described})"))
        return 0
    if args.cancel is not None:
        study = client.post(f"/studies/{quote(args.cancel, safe='')}/cancel", {})
        print(safe(f"study {study['id']} cancelled: " + ", ".join(f"{n} {status}" for status, n in
                                                                 sorted(study["progress"].items()))))
        return 0
    study_id = args.show
    if study_id is None:
        if not args.name:
            raise ValueError("--name is needed to create a study")
        body: dict[str, Any] = {"name": args.name, "evaluations": args.evaluations or ["knn"]}
        for key in ("template", "preset", "project", "queue"):
            if getattr(args, key):
                body[key] = getattr(args, key)
        if args.overrides:
            body["overrides"] = _overrides(args.overrides)
        axes = []
        for item in args.axes:
            path, sep, values = item.partition("=")
            if not sep or not values:
                raise ValueError(f"--axis {item!r}: expected PATH=V1,V2,...")
            axes.append({"path": path.strip(), "values": [parse_cli_value(v) for v in values.split(",")]})
        if args.axes_json:
            with open(args.axes_json) as fh:
                axes += json.load(fh)
        if axes:
            body["axes"] = axes
        evals: dict[str, dict[str, Any]] = {}
        for item in args.eval_set:
            kind, sep, setting = item.partition(":")
            if not sep:
                raise ValueError(f"--eval-set {item!r}: expected KIND:KEY=VALUE")
            evals.setdefault(kind, {}).update(_overrides([setting]))
        if evals:
            body["eval_overrides"] = evals
        created = client.post("/studies", body)
        study_id = created["id"]
        print(safe(f"study {study_id}: {created['runs']} runs queued"))
    if args.wait:
        _wait_study(client, study_id)
    print(safe(client.get(f"/studies/{study_id}/table.md", text=True), lines=True), end="")
    return 0


def _wait_run(client: Client, run: dict[str, Any]) -> dict[str, Any]:
    """A progress bar until the run ends; -> the run as it ended."""
    from .progress import Bars

    bars = Bars(client)
    bars.add(run["id"], run.get("name") or f"{run['kind']} {run['id']}")
    try:
        return bars.wait()[run["id"]]
    finally:
        bars.close()


def parse_cli_value(text: str) -> Any:
    from mocov3_core.config import parse_value

    return parse_value(text.strip())


def _wait_study(client: Client, study_id: str) -> None:
    from tqdm import tqdm

    with tqdm(desc="study", unit="job", dynamic_ncols=True) as bar:
        while True:
            study = client.get(f"/studies/{study_id}")
            done = sum(n for status, n in study["progress"].items() if status in TERMINAL)
            failed = sum(n for status, n in study["progress"].items() if status in ("failed", "cancelled"))
            total = study["runs"] + study["runs"] * len(study["evaluations"]) - failed * len(study["evaluations"])
            evals_ended = sum(1 for row in study["rows"] for cell in row["evals"].values()
                              if cell["status"] in TERMINAL)
            bar.total = total
            bar.n = done + evals_ended
            bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in sorted(study["progress"].items())))
            bar.refresh()
            if bar.n >= total:
                return
            time.sleep(3.0)


def main(argv: list[str] | None = None) -> None:
    from mocov3_core.config import ConfigError

    from .stack import StackError

    try:
        code = run(argv)
    except (ClientError, ConfigError, FileNotFoundError, ValueError, StackError) as exc:
        print(safe(f"error: {exc}"), file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
