"""`mocolab channels`: the team's notification channels from the terminal.

    mocolab channels list
    mocolab channels add NAME --kind webhook|slack|email (--url URL | --email ADDR ...) [--project P]
                         [--severity warning|critical ...] [--kind-of-alert K ...] [--run-end S ...]
                         [--cooldown SECONDS] [--header 'Name: value' ...] [--signing-secret S]
    mocolab channels test ID       send a test message now; exit 1 when it was not delivered
    mocolab channels log ID        the channel's messages, newest first, with each attempt
    mocolab channels rm ID

A URL, header or signing secret is sent to the server and never shown again (`list` shows the masked URL).
"""

from __future__ import annotations

import argparse
from typing import Any

from .client import Client
from .terminal import safe


def add_parser(sub: Any) -> None:
    p = sub.add_parser("channels", help="the team's notification channels: list, add, test, log, rm",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="channels_command", required=True)
    for name, text in (("list", "the team's channels"), ("add", "a new channel"),
                       ("test", "send a test message now"), ("log", "the channel's deliveries and attempts"),
                       ("rm", "delete a channel and its log")):
        c = commands.add_parser(name, help=text, description=text)
        if name == "add":
            c.add_argument("name")
            c.add_argument("--kind", required=True, choices=("webhook", "slack", "email"))
            c.add_argument("--url", default=None, help="webhook and slack: where to POST (write-only)")
            c.add_argument("--email", action="append", default=None, metavar="ADDR", help="email: a recipient")
            c.add_argument("--project", default=None, help="only this project's runs (default: the whole team)")
            c.add_argument("--severity", action="append", default=None, choices=("warning", "critical"))
            c.add_argument("--kind-of-alert", action="append", default=None, metavar="K",
                           help="only these alert kinds (default: all)")
            c.add_argument("--run-end", action="append", default=None, choices=("succeeded", "failed", "lost"))
            c.add_argument("--cooldown", type=int, default=None, metavar="SECONDS",
                           help="one message per run and kind within this long (default 1800)")
            c.add_argument("--header", action="append", default=None, metavar="'NAME: VALUE'",
                           help="webhook: an extra header (write-only)")
            c.add_argument("--signing-secret", default=None, help="webhook: sign each body (X-Mocolab-Signature)")
        elif name != "list":
            c.add_argument("id", type=int)
        if name == "log":
            c.add_argument("--limit", type=int, default=20)
        c.add_argument("--team", default=None, help="one of your teams (default: your first)")


def _headers(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"--header {item!r}: expected 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def run(client: Client, args: argparse.Namespace) -> int:
    command, team = args.channels_command, args.team
    if command == "list":
        print(f"{'ID':>4s} {'NAME':20s} {'KIND':8s} {'ON':3s} {'PROJECT':14s} TARGET")
        for ch in client.get("/channels", team=team):
            print(safe(f"{ch['id']:>4d} {ch['name'][:20]:20s} {ch['kind']:8s} {'yes' if ch['enabled'] else 'no':3s} "
                       f"{(ch['project'] or '(all)')[:14]:14s} {ch['target_hint']}"))
        return 0
    if command == "add":
        rules: dict[str, Any] = {}
        if args.severity:
            rules["severities"] = args.severity
        if args.kind_of_alert:
            rules["alert_kinds"] = args.kind_of_alert
        if args.run_end:
            rules["run_ends"] = args.run_end
        body: dict[str, Any] = {"name": args.name, "kind": args.kind, "url": args.url, "emails": args.email,
                                "project": args.project, "team": team, "cooldown_s": args.cooldown,
                                "headers": _headers(args.header), "signing_secret": args.signing_secret,
                                "rules": rules or None}
        ch = client.post("/channels", {k: v for k, v in body.items() if v is not None})
        print(safe(f"channel {ch['id']} {ch['name']} ({ch['kind']}) -> {ch['target_hint']}"))
        return 0
    path = f"/channels/{args.id}"
    if command == "rm":
        client.delete(path)
        print(f"channel {args.id} deleted")
        return 0
    if command == "test":
        d = client.post(f"{path}/test", {})
        print(_delivery(d))
        return 0 if d["status"] == "sent" else 1
    for d in client.get(f"{path}/deliveries", limit=args.limit):  # log
        print(_delivery(d))
    return 0


def _delivery(d: dict[str, Any]) -> str:
    lines = [f"#{d['id']} {d['created_at'][:19]} {d['status']:7s} {d['kind']:10s} {d['title']}"
             + (f" (+{d['suppressed']} suppressed)" if d["suppressed"] else "")]
    for a in d["attempts"]:
        what = "ok" if a["ok"] else (a["error"] or "failed")
        code = f" {a['code']}" if a["code"] is not None else ""
        lines.append(f"    {a['time'][:19]}{code} {what} ({a['duration_ms']:.0f} ms)")
    return safe("\n".join(lines))
