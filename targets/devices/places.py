"""Where ``--on`` runs: a place name -> its :class:`~edge_sam.targets.devices.transport.Transport`
(``local``, ``ssh://user@host[:port]``, ``adb[:SERIAL]``, ``aarch64[-CPU]:DIR``)."""

from __future__ import annotations

import os
import re

from edge_sam.targets.devices.emulated import DEFAULT_CPU, EmulatedTransport
from edge_sam.targets.devices.transport import AdbTransport, LocalTransport, SshTransport, Transport, TransportError

_SSH_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^@/:]+)(?::(?P<port>\d+))?/?$")
_EMULATED = re.compile(r"^aarch64(?:-(?P<cpu>[a-z0-9]+))?:(?P<dir>.+)$")


def transport_for(place: str, ssh_config: str | os.PathLike | None = None) -> Transport:
    """``local``, ``ssh://user@host[:port]``, ``adb[:SERIAL]`` or ``aarch64[-CPU]:DIR`` -> its transport."""
    if place == "local":
        return LocalTransport()
    emulated = _EMULATED.match(place)
    if emulated:
        return EmulatedTransport(emulated["dir"], emulated["cpu"] or DEFAULT_CPU)
    if place == "adb" or place.startswith("adb:"):
        return AdbTransport(place[4:] or None)
    match = _SSH_URL.match(place)
    if match:
        port = int(match["port"]) if match["port"] else None
        return SshTransport(match["host"].strip("[]"), match["user"], port, ssh_config)
    raise TransportError(f"unknown device '{place}': give local, ssh://user@host[:port], adb:SERIAL or aarch64[-CPU]:DIR")
