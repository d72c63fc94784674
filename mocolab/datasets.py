"""`mocolab datasets`: the team's registered datasets from the terminal.

    mocolab datasets list
    mocolab datasets show NAME
    mocolab datasets add NAME PATH [--kind K] [--no-wait]       register a folder; waits for its scan
    mocolab datasets prepare NAME [--short-side N] [--quality Q] [--no-wait]   write its packed copy; waits
    mocolab datasets rm NAME                                    forget it (its files stay)

`add` and `prepare` follow their run with the same progress bar as `submit --wait` (images done of each phase's
total) and end with the dataset's state: exit 0 when it is ready (prepared), 1 when it failed.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any
from urllib.parse import quote

from .client import Client
from .terminal import safe

SETTLE_S = 15.0  # after its run ended, how long a dataset may take to show the outcome (the watchdog's pass)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("datasets", help="the team's datasets: list, show, add, prepare, rm",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="datasets_command", required=True)
    for name, text in (("list", "the team's datasets"), ("show", "one dataset: counts, classes, statistics"),
                       ("add", "register a folder and scan it"), ("prepare", "write the packed copy"),
                       ("rm", "forget a dataset (its files stay)")):
        c = commands.add_parser(name, help=text, description=text)
        if name != "list":
            c.add_argument("name")
        if name == "add":
            c.add_argument("path", help="the folder, as the server and the workers see it")
            c.add_argument("--kind", default=None, help="its reader (default: told from the folder): imagefolder, "
                           "idx, cifar10, cifar100, npz, packed, fashion_mnist, mnist")
        if name == "prepare":
            c.add_argument("--short-side", default=None, metavar="N", help="shorter side of the re-encoded images "
                           "(default 256)")
            c.add_argument("--quality", default=None, metavar="Q", help="JPEG quality 50-100 (default 90)")
        if name in ("add", "prepare"):
            c.add_argument("--no-wait", action="store_true", help="return once the run is queued")
        c.add_argument("--team", default=None, help="one of your teams (default: your first)")


def _whole(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ValueError(f"{flag} {text!r}: expected a whole number")
    return int(text)


def run(client: Client, args: argparse.Namespace) -> int:
    team = args.team
    command = args.datasets_command
    if command == "list":
        rows = client.get("/datasets", team=team)
        print(f"{'NAME':24s} {'KIND':13s} {'STATUS':9s} {'TRAIN':>9s} {'VAL':>8s} {'CLASSES':>7s}  PREPARED")
        for d in rows:
            print(_row(d))
        return 0
    path = f"/datasets/{quote(args.name, safe='')}"
    if command == "show":
        print(show(client.get(path, team=team)), end="")
        return 0
    if command == "rm":
        client.delete(path, team=team)
        print(safe(f"dataset {args.name} removed (its files were not touched)"))
        return 0
    if command == "add":
        body: dict[str, Any] = {"name": args.name, "path": os.path.abspath(os.path.expanduser(args.path))}
        if args.kind:
            body["kind"] = args.kind
        if team:
            body["team"] = team
        ds = client.post("/datasets", body)
        run_id, done = ds["scan_run_id"], lambda d: d["status"] != "scanning"
    else:  # prepare
        options = {"short_side": _whole("--short-side", args.short_side), "quality": _whole("--quality", args.quality)}
        ds = client.post(f"{path}/prepare", {k: v for k, v in options.items() if v is not None}, team=team)
        run_id, done = ds["prepare_run_id"], lambda d: d["prepare_status"] != "preparing"
    print(safe(f"{ds['name']}: {command == 'add' and 'scanning' or 'preparing'} (run {run_id})"))
    if args.no_wait:
        return 0
    _follow(client, run_id, f"{'scan' if command == 'add' else 'prepare'} {ds['name']}")
    ds = _settled(client, f"/datasets/{quote(ds['name'], safe='')}", team, done)
    print(_row(ds))
    failed = ds["status"] == "failed" or (command == "prepare" and ds["prepare_status"] != "prepared")
    if failed and ds.get("error"):
        print(safe(f"error: {ds['error']}"))
    return 1 if failed else 0


def _follow(client: Client, run_id: str, label: str) -> dict[str, Any]:
    from .progress import Bars

    bars = Bars(client)
    bars.add(run_id, label, unit="img")
    try:
        return bars.wait()[run_id]
    finally:
        bars.close()


def _settled(client: Client, path: str, team: str | None, done: Any) -> dict[str, Any]:
    """The dataset once it shows its run's outcome (at once, unless only the watchdog's next pass tells it)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        ds: dict[str, Any] = client.get(path, team=team)
        if done(ds) or time.monotonic() > deadline:
            return ds
        time.sleep(0.5)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _row(d: dict[str, Any]) -> str:
    splits = d.get("splits") or {}
    prepared = {"prepared": f"yes ({(d.get('packed') or {}).get('short_side', '?')})", "preparing": "preparing",
                "failed": "failed", "none": "-"}.get(d.get("prepare_status") or "none", "-")
    return safe(f"{d['name']:24s} {d['kind']:13s} {d['status']:9s} "
                f"{_count((splits.get('train') or {}).get('images')):>9s} "
                f"{_count((splits.get('val') or {}).get('images')):>8s} {_count(d.get('num_classes')):>7s}  "
                f"{prepared}").rstrip()


def _numbers(values: Any) -> str:
    return " ".join(f"{v:.4f}" for v in values) if isinstance(values, list) else "-"


def show(d: dict[str, Any]) -> str:
    """What `datasets show` prints: counts, the first classes, statistics, image sizes, the packed copy."""
    splits = d.get("splits") or {}
    classes = d.get("classes") or []
    lines = [f"{d['name']} (team {d['team']}{', built in' if d.get('builtin') else ''}): {d['kind']}, {d['status']}",
             f"root:       {d.get('root') or '-'}"]
    if d.get("error"):
        lines.append(f"error:      {d['error']}")
    lines.append("images:     " + (", ".join(f"{k} {_count((v or {}).get('images'))}" for k, v in splits.items())
                                   or "- (not scanned yet)"))
    shown = ", ".join(classes[:8]) + (f", ... ({len(classes) - 8} more)" if len(classes) > 8 else "")
    lines.append(f"classes:    {_count(d.get('num_classes'))}" + (f": {shown}" if classes else ""))
    lines.append(f"mean:       {_numbers(d.get('mean'))}")
    lines.append(f"std:        {_numbers(d.get('std'))}" + (f"  (from {_count(d['stats_images'])} images)"
                                                             if d.get("stats_images") else ""))
    size = d.get("image_size")
    if isinstance(size, dict):
        lines.append("image size: " + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in size.items()
                                                if isinstance(v, list) and len(v) == 2))
    packed = d.get("packed")
    if isinstance(packed, dict):
        mb = (packed.get("bytes") or 0) / 1e6
        lines.append(f"packed:     {packed.get('root')} (short side {packed.get('short_side')}, quality "
                     f"{packed.get('quality')}, {packed.get('shards')} shards, {mb:.1f} MB)")
    else:
        lines.append(f"packed:     {d.get('prepare_status')}")
    runs = [f"{k} {d[f'{k}_run_id']}" for k in ("scan", "prepare") if d.get(f"{k}_run_id")]
    if runs:
        lines.append(f"runs:       {', '.join(runs)}")
    return "".join(safe(line) + "\n" for line in lines)
