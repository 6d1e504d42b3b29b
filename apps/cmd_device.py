"""``edge-sam device create aarch64 DIR``: an emulated aarch64 place for ``validate --on aarch64:DIR``
(an arm64 Debian userland with the runtimes' aarch64 builds, run under QEMU user-mode emulation)."""

from __future__ import annotations

import argparse
import json
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("device", help="make a place to validate on (an emulated aarch64 userland)")
    actions = parser.add_subparsers(dest="device_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make (or bring up to date) an emulated place; prints what it made")
    create.add_argument("kind", choices=["aarch64"], help="aarch64: arm64 Debian 12 under qemu-user-static (needs root)")
    create.add_argument("dir", metavar="DIR", help="where the place lives (several GB); reused when it is already there")
    create.set_defaults(run=run_create)


def run_create(args: argparse.Namespace) -> int:
    from edge_sam.targets.devices.aarch64_place import create_place

    start = time.perf_counter()
    record = create_place(args.dir)
    print(json.dumps(record, indent=2))
    print(f"place: aarch64:{args.dir} ({time.perf_counter() - start:.0f} s); validate on it with "
          f"--on aarch64:{args.dir} (phone CPU) or --on aarch64-orin:{args.dir}")
    return 0
