"""The ``edge-sam`` command line. Each job lives in its own module under apps/ (``cmd_*.py``)
that exposes ``register(subparsers)``; this file only assembles them and turns user errors
into one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_sam.errors import EdgeSamError

# Modules under edge_sam.apps; each adds its sub-commands.
COMMANDS = ["cmd_segment", "cmd_data", "cmd_eval", "cmd_train", "cmd_export", "cmd_validate", "cmd_bench", "cmd_deploy", "cmd_app", "cmd_quantize", "cmd_device"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-sam",
        description="EfficientSAM on edge devices: segment, train, quantize, export, validate.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"edge_sam.apps.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except EdgeSamError as exc:
        print(f"edge-sam: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable output folder, a full disk
        print(f"edge-sam: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-sam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
