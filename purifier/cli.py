"""The `purifier` command. Subcommands import their package lazily, so that
`purifier serve` runs where torch is not installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from training.methods import train_from_config

    train_from_config(args.config, overrides=args.set, resume=not args.fresh)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from training.evaluation import evaluate_from_config

    evaluate_from_config(args.config, overrides=args.set, resume=args.resume)
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export_from_config

    export_from_config(
        args.config,
        evaluation=args.evaluation,
        output_root=args.output_root,
        version=args.version,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from service.serve import serve

    serve(host=args.host, port=args.port, model=args.model)
    return 0


def _purify(args: argparse.Namespace) -> int:
    from service.batch import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="purifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    override_help = "override a config value, e.g. --set train.epochs=2 (repeatable)"

    p = sub.add_parser("train", help="train a classifier or a purifier from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=override_help)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="write the robustness table for an evaluation config")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=override_help)
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the cells a stopped run already measured (same specs and weights)",
    )
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="export a trained purifier to ONNX with its card")
    p.add_argument("config", help="the purifier's training config")
    p.add_argument("--evaluation", help="table.json written by `purifier eval`")
    p.add_argument("--output-root", default="exported_models")
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(func=_export)

    p = sub.add_parser("serve", help="serve exported models over HTTP (no torch needed)")
    p.add_argument("--host", help="default 127.0.0.1 (PURIFIER_HOST)")
    p.add_argument("--port", type=int, help="default 8080 (PURIFIER_PORT)")
    p.add_argument("--model", help="the default model (PURIFIER_DEFAULT_MODEL)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("purify", help="purify image files and folders in process (no server)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", help="default: the service's default model")
    p.add_argument("--repository", help="model repository (PURIFIER_MODEL_REPOSITORY)")
    p.add_argument("--format", default="same", choices=["same", "png", "jpeg", "webp"])
    p.add_argument("--quality", type=int, help="JPEG/WebP quality (PURIFIER_JPEG_QUALITY)")
    p.add_argument("--workers", type=int, default=2, help="decode/encode threads")
    p.set_defaults(func=_purify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
