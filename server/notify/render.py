"""A delivery as each kind of channel receives it. Every message says what fired, the evidence (the value
against its baseline and threshold), the remedy, the last healthy checkpoint, a link to the run page opened
at the step (`{public_url}/runs/{run_id}?step={step}`) and the chart of the signal around the step.

- webhook: the JSON document `mocolab.notification/1` (docs/notifications.md gives every field);
- slack: `text` (the fallback) and `blocks`: a header, a section with fields, the chart as an image block
  (Slack fetches the signed chart link, so the public URL must be reachable from Slack), a button to the run;
- email: text and HTML alternatives, the chart inline in the HTML (multipart/related, `cid:`).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import quote

from server.notify.outbox import NotifyEvent

SCHEMA = "mocolab.notification/1"


@dataclass
class Context:
    """What a message needs besides its event: where it goes and the server's addresses."""

    delivery_id: int
    channel: str
    team: str
    project: str | None
    public_url: str
    suppressed: int
    cooldown_s: int
    chart_url: str | None  # the signed link to the chart PNG, when the message has a chart
    sent_at: datetime


def run_link(public_url: str, event: NotifyEvent) -> str | None:
    if event.kind == "study":
        study = event.details.get("study_id")
        return f"{public_url}/studies/{quote(str(study))}" if study else None
    if not event.run_id:
        return None
    link = f"{public_url}/runs/{quote(event.run_id)}"
    return f"{link}?step={event.step}" if event.step is not None else link


def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v)
    if isinstance(v, int | float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def evidence_line(event: NotifyEvent) -> str | None:
    d = event.details
    if event.kind != "alert" or d.get("metric") is None:
        return None
    line = f"{d['metric']} = {_num(d.get('value'))}"
    if d.get("baseline") is not None:
        line += f" vs baseline {_num(d.get('baseline'))}"
    if d.get("threshold") is not None:
        line += f" (threshold {_num(d.get('threshold'))})"
    return line + (f" at step {event.step}" if event.step is not None else "")


def facts(event: NotifyEvent, ctx: Context) -> list[tuple[str, str]]:
    """The message's labelled facts, in the order every channel shows them."""
    d = event.details
    out: list[tuple[str, str]] = []
    if event.run_id:
        out.append(("Run", f"{event.run_name or event.run_id} ({event.run_id})"))
    out.append(("Team", ctx.team + (f" / {ctx.project}" if ctx.project else "")))
    if event.step is not None:
        out.append(("Step", str(event.step)))
    if event.kind == "alert":
        out.append(("Alert", f"{event.alert_kind} ({event.severity})"))
        evidence = evidence_line(event)
        if evidence:
            out.append(("Evidence", evidence))
        extra = d.get("evidence")
        if isinstance(extra, dict) and extra:
            out.append(("Details", ", ".join(f"{k}={_num(v)}" for k, v in list(extra.items())[:8])))
        if d.get("remedy"):
            out.append(("Remedy", str(d["remedy"])))
        out.append(("Last healthy checkpoint", str(d.get("last_healthy_checkpoint") or "none yet")))
    elif event.kind == "run_end":
        out.append(("Status", f"{event.status} (attempt {d.get('attempt')})"))
        if d.get("best_knn_top1") is not None:
            out.append(("Best kNN top-1", f"{_num(d['best_knn_top1'])}%"))
        if d.get("alert_count"):
            out.append(("Alerts", str(d["alert_count"])))
        if d.get("message"):
            out.append(("Message", str(d["message"])[:500]))
    elif event.kind == "evaluation":
        out.append(("Protocol", str(d.get("protocol"))))
        out.append(("Top-1 / top-5", f"{_num(d.get('top1'))}% / {_num(d.get('top5'))}%"))
        if d.get("pretrain_run_id"):
            out.append(("Pretraining run", str(d.get("pretrain_run_name") or d["pretrain_run_id"])))
    elif event.kind == "study":
        out.append(("Runs", f"{d.get('runs')}: {event.summary}"))
    if ctx.suppressed:
        out.append(("Suppressed", f"{ctx.suppressed} more like it within {ctx.cooldown_s // 60} min (cooldown)"))
    return out


def _jsonable(value: Any) -> Any:
    """No NaN or infinity in a JSON document: they become the strings events use ('nan', 'inf', '-inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def webhook_body(event: NotifyEvent, ctx: Context) -> bytes:
    d = event.details
    alert = None
    if event.kind == "alert":
        alert = {"kind": event.alert_kind, "severity": event.severity, "step": event.step,
                 **{k: d.get(k) for k in ("metric", "value", "baseline", "threshold", "message", "remedy",
                                          "evidence", "last_healthy_checkpoint")}}
    doc = {
        "schema": SCHEMA, "id": ctx.delivery_id, "kind": event.kind, "title": event.title,
        "summary": event.summary, "team": ctx.team, "project": ctx.project, "channel": ctx.channel,
        "run": {"id": event.run_id, "name": event.run_name} if event.run_id else None, "step": event.step,
        "severity": event.severity, "status": event.status, "alert": alert,
        "evidence": evidence_line(event), "details": d, "suppressed": ctx.suppressed,
        "cooldown_s": ctx.cooldown_s, "link": run_link(ctx.public_url, event), "chart_url": ctx.chart_url,
        "time": datetime.fromtimestamp(event.time, UTC).isoformat(), "sent_at": ctx.sent_at.isoformat(),
        "facts": [{"label": k, "value": v} for k, v in facts(event, ctx)],
    }
    return json.dumps(_jsonable(doc), separators=(",", ":"), allow_nan=False).encode()


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(event: NotifyEvent, ctx: Context) -> bytes:
    link = run_link(ctx.public_url, event)
    pairs = facts(event, ctx)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": event.title[:150], "emoji": False}}]
    if event.summary:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(event.summary)[:2900]}})
    short = [(k, v) for k, v in pairs if len(v) <= 200][:10]
    long = [(k, v) for k, v in pairs if len(v) > 200]
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"[:2000]}
                                                 for k, v in short]})
    for k, v in long:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"[:2900]}})
    if ctx.chart_url:
        blocks.append({"type": "image", "image_url": ctx.chart_url, "alt_text": f"{event.title}: chart"[:2000]})
    if link:
        blocks.append({"type": "actions", "elements": [{"type": "button", "text": {
            "type": "plain_text", "text": "Open the run" if event.run_id else "Open"}, "url": link}]})
    fallback = event.title + (f" — {evidence_line(event)}" if evidence_line(event) else "")
    text = _mrkdwn(fallback) + (f" <{link}|open>" if link else "")
    return json.dumps(_jsonable({"text": text, "blocks": blocks}), allow_nan=False).encode()


def plain_text(event: NotifyEvent, ctx: Context) -> str:
    lines = [event.title, ""]
    if event.summary and event.summary != event.title:
        lines += [event.summary, ""]
    lines += [f"{k}: {v}" for k, v in facts(event, ctx)]
    link = run_link(ctx.public_url, event)
    if link:
        lines += ["", f"Open: {link}"]
    lines += ["", f"-- mocolab, channel {ctx.channel}"]
    return "\n".join(lines) + "\n"


def email_message(event: NotifyEvent, ctx: Context, *, sender: str, to: list[str], chart: bytes | None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[mocolab] {event.title}"[:250]
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(ctx.sent_at.timestamp(), usegmt=True)
    msg["Message-ID"] = make_msgid(f"notify.{ctx.delivery_id}")
    msg["X-Mocolab-Delivery"] = str(ctx.delivery_id)
    msg.set_content(plain_text(event, ctx))
    link = run_link(ctx.public_url, event)
    rows = "".join(f"<tr><th align='left' valign='top'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in facts(event, ctx))
    cid = make_msgid("chart")
    img = f"<p><img src='cid:{cid[1:-1]}' alt='chart' width='640' height='260'></p>" if chart else ""
    button = f"<p><a href='{html.escape(link)}'>Open the run at this step</a></p>" if link else ""
    summary = f"<p>{html.escape(event.summary)}</p>" if event.summary and event.summary != event.title else ""
    body = (f"<html><body><h2>{html.escape(event.title)}</h2>{summary}<table cellpadding='4'>{rows}</table>"
            f"{img}{button}<p style='color:#888'>mocolab, channel {html.escape(ctx.channel)}</p></body></html>")
    msg.add_alternative(body, subtype="html")
    if chart:
        html_part = msg.get_payload()[1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(chart, maintype="image", subtype="png", cid=cid, filename="chart.png")
    return msg
