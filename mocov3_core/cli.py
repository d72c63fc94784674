"""Command line of the engine: `python -m mocov3_core {pretrain,knn,linear,finetune,prepare,presets,schema,config}`.

Every command takes `--set key=value` overrides on the spec (dotted paths, JSON values), shows a progress
bar, and appends every event as a JSON line to OUT/events.jsonl (prepare: to --events). A bad option is one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError, json_schema
from .events import ConsoleSink, EventSink, JsonlSink
from .presets import PRETRAIN_PRESETS, build_spec, list_presets

SET_HELP = ("override one field of the spec, e.g. --set optim.base_lr=3e-4 --set model.stop_grad_patch_proj=false "
            "(dotted path from `config` output; value parsed as JSON, else a string). Repeatable.")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--out", type=Path, default=None,
                   help="run directory: events.jsonl, result.json and (pretraining) checkpoints/ go here")
    p.add_argument("--run-id", default=None, help="event stream id (default: random, or the resumed run's)")
    p.add_argument("--no-progress", action="store_true", help="print lines instead of a progress bar")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="pretraining checkpoint (.pt) or run directory (its latest checkpoint is used)")
    p.add_argument("--random-init", action="store_true",
                   help="evaluate the checkpoint's architecture at random initialisation (the baseline to beat)")
    _common(p)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mocov3_core", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="MoCo v3 (or SimCLR, BYOL, SwAV) pretraining",
                       description="Pretrain a backbone with MoCo v3, or with --set framework=simclr|byol|swav. "
                                   "Checkpoints go to OUT/checkpoints; rerunning "
                                   "the same command resumes from the latest one (--resume none starts afresh).")
    p.add_argument("--preset", default=None, choices=list_presets(), metavar="NAME",
                   help=f"start from a named recipe: {', '.join(list_presets())}")
    p.add_argument("--resume", default="auto",
                   help="'auto' (default): continue from OUT's latest checkpoint if any; a .pt path; or 'none'")
    _common(p)

    p = sub.add_parser("knn", help="weighted kNN accuracy of frozen features",
                       description="Weighted kNN (cosine, exp(sim/t) votes) of frozen features on the test set.")
    p.add_argument("--pixels", action="store_true", help="raw-pixel baseline: no backbone at all")
    _eval_args(p)
    p = sub.add_parser("linear", help="linear probe on frozen features",
                       description="Linear probe (SGD, cosine, wd 0). --set mode=paper for the paper's augmented "
                                   "recipe; the default 'cached' trains on features extracted once.")
    _eval_args(p)
    p = sub.add_parser("finetune", help="end-to-end fine-tuning (DeiT recipe)")
    _eval_args(p)

    p = sub.add_parser("prepare", help="inspect a dataset; with --out, write its packed copy",
                       description="Count, classify and measure a dataset (mean/std, image sizes, a sample grid); "
                                   "with --out also write its packed copy (JPEG shards at --short-side plus an "
                                   "index; docs/datasets.md), resumable: rerun the same command after an "
                                   "interruption. Prints the dataset's summary as JSON.")
    p.add_argument("--dataset", default=None, help="reader: imagefolder, packed, fashion_mnist, mnist, cifar10, "
                   "cifar100, idx, npz (data.dataset)")
    p.add_argument("--root", default=None, help="the dataset's folder (data.root)")
    p.add_argument("--out", default=None, help="packed folder to write; without it the dataset is only inspected")
    p.add_argument("--short-side", type=int, default=None, help="shorter side of the packed images (256)")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality of the packed images (90)")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (4)")
    p.add_argument("--grid", type=Path, default=None, help="also write the sample grid to this JPEG file")
    p.add_argument("--events", type=Path, default=None, help="append every event as a JSON line to this file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--run-id", default=None, help="event stream id (default: random)")
    p.add_argument("--no-progress", action="store_true", help="print lines instead of a progress bar")

    sub.add_parser("presets", help="list the named pretraining presets")
    p = sub.add_parser("schema", help="print a spec's JSON Schema")
    p.add_argument("kind", nargs="?", default="pretrain", choices=["pretrain", "knn", "linear", "finetune"])
    p = sub.add_parser("config", help="print the resolved pretraining spec (defaults -> preset -> --set)")
    p.add_argument("--preset", default=None, metavar="NAME")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    return ap


def _sinks(args: argparse.Namespace) -> list[EventSink]:
    sinks: list[EventSink] = [ConsoleSink(bar=not args.no_progress)]
    if args.out is not None:
        sinks.append(JsonlSink(args.out / "events.jsonl"))
    return sinks


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "presets":
        for name in list_presets():
            arch = PRETRAIN_PRESETS[name].get("model", {}).get("arch", "vit_small_p16")
            print(f"{name:18s} {arch}")
        return 0
    if args.command == "schema":
        print(json.dumps(json_schema(args.kind), indent=1))
        return 0
    if args.command == "config":
        print(json.dumps(build_spec("pretrain", args.preset, args.overrides).model_dump(), indent=1))
        return 0
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "pretrain":
        spec = build_spec("pretrain", args.preset, args.overrides)
        out = args.out or Path("runs") / (spec.name or args.preset or "pretrain")
        args.out = out
        from .train import pretrain

        sinks = _sinks(args)
        try:
            result = pretrain(spec, out, sinks, run_id=args.run_id,  # type: ignore[arg-type]
                              resume=None if args.resume == "none" else args.resume)
        finally:
            for s in sinks:
                s.close()
        summary: dict[str, Any] = {"run_id": result.run_id, "status": result.status, "step": result.step,
                                   "checkpoint": result.checkpoint, "final_loss": result.last_values.get("loss"),
                                   "alerts": len(result.alerts), "reason": result.reason}
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
            (out / "result.json").write_text(json.dumps(summary, indent=1))
            print(json.dumps(summary))
        return 0 if result.status == "succeeded" else 3
    # evaluations
    base: dict[str, Any] = {}
    if args.checkpoint:
        base["checkpoint"] = args.checkpoint
    if args.random_init:
        base["random_init"] = True
    if getattr(args, "pixels", False):
        base["features"] = "pixels"
    spec = build_spec(args.command, None, args.overrides, base=base)
    from .eval import evaluate

    sinks = _sinks(args)
    try:
        outcome = evaluate(spec, sinks, run_id=args.run_id)  # type: ignore[arg-type]
    finally:
        for s in sinks:
            s.close()
    if args.out is not None:
        (args.out / "result.json").write_text(json.dumps(outcome, indent=1, default=str))
    print(json.dumps(outcome, default=str))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    base: dict[str, Any] = {"data": {k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v}}
    for key, value in (("out", args.out), ("short_side", args.short_side), ("quality", args.quality),
                       ("workers", args.workers)):
        if value is not None:
            base[key] = value
    spec = build_spec("prepare", None, args.overrides, base=base)
    from .data.prepare import run_prepare

    sinks: list[EventSink] = [ConsoleSink(bar=not args.no_progress)]
    if args.events is not None:
        sinks.append(JsonlSink(args.events))
    try:
        info = run_prepare(spec, sinks, run_id=args.run_id)  # type: ignore[arg-type]
    finally:
        for s in sinks:
            s.close()
    if args.grid is not None and info.get("samples_jpeg"):
        args.grid.write_bytes(base64.b64decode(info["samples_jpeg"]))
    summary = {k: v for k, v in info.items() if k != "samples_jpeg"}
    if len(summary.get("classes") or []) > 20:  # ImageNet's 1000 names would bury the rest
        summary["classes"] = [*summary["classes"][:20], f"... {len(summary['classes']) - 20} more"]
    print(json.dumps(summary, indent=1))
    return 3 if info.get("stopped") else 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
