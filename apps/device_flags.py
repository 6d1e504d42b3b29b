"""Flags shared by ``validate`` and ``bench`` for where the model runs: the PyTorch model on a
torch device and precision (``--torch-device``, ``--torch-precision``, ``--torch-compile``), and
artifacts on a device reached over ssh or adb (``--on`` and the options of the device runner)."""

from __future__ import annotations

import argparse
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.runner import TORCH_PRECISIONS


def add_torch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PyTorch rows (the model itself, on a torch device)")
    group.add_argument("--torch-device", metavar="DEVICE", default=None,
                       help="run the PyTorch model on DEVICE too (cpu, cuda, cuda:1): one row per --torch-precision")
    group.add_argument("--torch-precision", metavar="P[,P...]", default=None,
                       help=f"comma-separated, of {', '.join(TORCH_PRECISIONS)} (default fp32)")
    group.add_argument("--torch-compile", metavar="BACKEND", nargs="?", const=True, default=False,
                       help="through torch.compile (default backend inductor, or e.g. cudagraphs)")


def torch_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """TorchRunner keyword arguments, one per precision asked; none without --torch-device."""
    if args.torch_device is None:
        if args.torch_precision or args.torch_compile:
            raise EdgeSamError("--torch-precision and --torch-compile apply to --torch-device")
        return []
    precisions = [p for p in (args.torch_precision or "fp32").split(",") if p]
    unknown = sorted(set(precisions) - set(TORCH_PRECISIONS))
    if unknown:
        raise EdgeSamError(f"unknown --torch-precision {', '.join(unknown)} (choose from {', '.join(TORCH_PRECISIONS)})")
    return [{"device": args.torch_device, "precision": p, "compile": args.torch_compile} for p in precisions]


def add_device_flags(parser: argparse.ArgumentParser, repeatable: bool = True) -> None:
    from edge_sam.targets.devices.device_runner import PROGRAMS

    group = parser.add_argument_group("on a device (the artifact pushed there and run by a runner there)")
    group.add_argument("--on", metavar="PLACE", action="append" if repeatable else "store", default=None,
                       help="here (this process, the default), local (a subprocess with the device protocol), "
                            "ssh://user@host[:port] or adb:SERIAL" + ("; repeat for several" if repeatable else ""))
    group.add_argument("--device-program", choices=PROGRAMS, default=None,
                       help="native: the C++ ExecuTorch runner (default for ExecuTorch artifacts); python: "
                            "python -m edge_sam.targets.devices.worker on a device with edge_sam installed")
    group.add_argument("--runner-binary", metavar="PATH", default=None,
                       help="the native runner built for the device (default: build it here from apps/cpp)")
    group.add_argument("--remote-python", metavar="CMD", default="python3",
                       help="the device's Python for --device-program python (default python3)")
    group.add_argument("--ssh-config", metavar="FILE", default=None,
                       help="an ssh_config file for ssh -F (keys, known hosts, jump hosts)")


def device_settings(args: argparse.Namespace, runs: int = 1, warmup: int = 1):
    from edge_sam.targets.devices.device_runner import RemoteSettings

    return RemoteSettings(program=args.device_program, runner_binary=args.runner_binary,
                          remote_python=args.remote_python, ssh_config=args.ssh_config, runs=runs, warmup=warmup)
