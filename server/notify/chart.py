"""The small chart a message carries: one metric of a run around a step, drawn on the server with Pillow
(no plotting library: a line, the step marked in red, the threshold dashed and the baseline dotted, the
non-finite points as red ticks on the top edge) and encoded as PNG.

The points are read from the metrics table: the last `before` points up to the step and `after` points past
it, so a long run costs two small index reads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont
from sqlmodel import Session, col, select

from server.models import Metric

W, H = 640, 260
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 30, 34
BG, AXIS, GRID, LINE = (255, 255, 255), (90, 90, 90), (232, 232, 232), (37, 99, 235)
MARK, THRESH, BASE = (220, 38, 38), (234, 88, 12), (120, 120, 120)


def points(session: Session, run_id: str, key: str, step: int, before: int = 200,
           after: int = 60) -> list[tuple[int, float | None]]:
    base = select(Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.key == key)
    lo = session.exec(base.where(col(Metric.step) <= step).order_by(col(Metric.step).desc()).limit(before)).all()
    hi = session.exec(base.where(col(Metric.step) > step).order_by(col(Metric.step)).limit(after)).all()
    return [(int(s), v) for s, v in reversed(lo)] + [(int(s), v) for s, v in hi]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def render(pts: Sequence[tuple[int, float | None]], *, title: str, step: int | None,
           threshold: float | None = None, baseline: float | None = None) -> bytes:
    """A PNG of the points (step, value; None = NaN), the step marked, the threshold and baseline drawn."""
    img = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    d.text((PAD_L, 8), title[:90], fill=AXIS, font=font)
    x0, x1, y0, y1 = PAD_L, W - PAD_R, PAD_T, H - PAD_B
    d.rectangle((x0, y0, x1, y1), outline=AXIS)
    finite = [v for _, v in pts if v is not None and math.isfinite(v)]
    refs = [r for r in (threshold, baseline) if r is not None and math.isfinite(r)]
    if not pts or not (finite or refs):
        d.text((x0 + 10, (y0 + y1) // 2), "no finite points to draw", fill=AXIS, font=font)
        return _png(img)
    vals: list[float] = [v for v in finite if v is not None] + [r for r in refs if r is not None]
    vmin, vmax = min(vals), max(vals)
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - 0.5 * (abs(vmin) or 1), vmax + 0.5 * (abs(vmax) or 1)
    margin = 0.08 * (vmax - vmin)
    vmin, vmax = vmin - margin, vmax + margin
    steps = [float(s) for s, _ in pts] + ([float(step)] if step is not None else [])
    smin, smax = min(steps), max(steps)
    if smax == smin:
        smin, smax = smin - 1, smax + 1

    def px(s: float) -> float:
        return x0 + (s - smin) / (smax - smin) * (x1 - x0)

    def py(v: float) -> float:
        return y1 - (v - vmin) / (vmax - vmin) * (y1 - y0)

    for i in range(5):  # horizontal grid with its labels
        gv = vmin + (vmax - vmin) * i / 4
        gy = py(gv)
        d.line((x0 + 1, gy, x1 - 1, gy), fill=GRID)
        d.text((4, gy - 7), _fmt(gv), fill=AXIS, font=small)
    d.text((x0, y1 + 6), f"{smin:.0f}", fill=AXIS, font=small)
    d.text((x1 - 8 * len(f"{smax:.0f}"), y1 + 6), f"{smax:.0f}", fill=AXIS, font=small)
    if baseline is not None and math.isfinite(baseline):
        by = py(baseline)
        for x in range(x0, x1, 4):
            d.point((x, by), fill=BASE)
    if threshold is not None and math.isfinite(threshold):
        ty = py(threshold)
        for x in range(x0, x1, 12):
            d.line((x, ty, min(x + 6, x1), ty), fill=THRESH, width=2)
        d.text((x1 - 110, ty - 15), f"threshold {_fmt(threshold)}", fill=THRESH, font=small)
    segment: list[tuple[float, float]] = []
    for s, v in pts:
        if v is None or not math.isfinite(v):
            if len(segment) > 1:
                d.line(segment, fill=LINE, width=2)
            segment = []
            d.line((px(s), y0 + 1, px(s), y0 + 8), fill=MARK, width=2)  # a NaN or inf: a tick on the top
            continue
        segment.append((px(s), py(v)))
    if len(segment) > 1:
        d.line(segment, fill=LINE, width=2)
    elif len(segment) == 1:
        cx, cy = segment[0]
        d.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=LINE)
    if step is not None:
        sx = px(step)
        d.line((sx, y0, sx, y1), fill=MARK, width=2)
        d.text((min(sx + 4, x1 - 70), y1 - 16), f"step {step}", fill=MARK, font=small)
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def for_delivery(session: Session, run_id: str | None, details: dict[str, object], step: int | None) -> bytes | None:
    """The chart of a message about a run: the alert's metric around its step, else the loss near the end."""
    if run_id is None:
        return None
    metric = details.get("metric")
    key = metric if isinstance(metric, str) and metric else "loss"
    if step is None:
        last = session.exec(select(Metric.step).where(Metric.run_id == run_id, Metric.key == key)
                            .order_by(col(Metric.step).desc()).limit(1)).first()
        if last is None:
            return None
        step = int(last)
    pts = points(session, run_id, key, step)
    if not pts:
        return None
    threshold, baseline = details.get("threshold"), details.get("baseline")
    return render(pts, title=f"{key} around step {step}", step=step,
                  threshold=float(threshold) if isinstance(threshold, int | float) else None,
                  baseline=float(baseline) if isinstance(baseline, int | float) else None)
