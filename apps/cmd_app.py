"""``edge-sam app``: click on an image and see the fp32 mask beside each artifact's (see docs/app.md)."""

from __future__ import annotations

import argparse
import sys

from .common import add_checkpoint_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="local web page: fp32 PyTorch and each artifact's mask side by side, with IoU and timings",
    )
    parser.add_argument("--artifact", action="append", default=[], metavar="DIR",
                        help="artifact folder to compare with fp32 (repeatable; none: the fp32 model alone)")
    add_checkpoint_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.set_defaults(run=run_app)


def run_app(args: argparse.Namespace) -> int:
    from .web.server import make_server
    from .web.session import AppSession

    session = AppSession(args.checkpoint, args.artifact)
    server = make_server(session, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"edge-sam app: http://{host}:{port}/ ({len(session.engines)} engines: "
          f"{', '.join(e.label for e in session.engines)}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("edge-sam app: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
