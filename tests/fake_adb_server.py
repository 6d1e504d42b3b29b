"""A fake adb *server* whose one device is the emulated aarch64 place, for Debian's real ``adb`` client.

``adb`` is a client and a server in one program: each command line is a client that connects to the
server (127.0.0.1:5037, or $ANDROID_ADB_SERVER_PORT), which holds the devices. The client speaks the
adb host protocol (a request is 4 hex digits of length and a service name; the answer OKAY or FAIL
and a message). This module is that server, with one device: ``host:version``, ``host:devices`` and
``host-serial:SERIAL:features`` are answered here; after ``host:tport:serial:SERIAL`` (or ``any``)
come the device's services, answered as adbd answers them:

- ``shell,v2,raw:COMMAND``: COMMAND run by ``sh -c`` in the place's userland on its emulated CPU
  (``run_in_userland``), its stdout, stderr and exit status sent as shell protocol v2 packets;
- ``sync:``: STAT / STA2 / LST2, LIST, SEND and RECV on the userland's files (device path P is the
  place's rootfs/P, as the emulated transport's push and pull see it), until QUIT.

The place gains Android's /data/local/tmp. Every service asked is kept in ``services`` (a sync
request as ``sync:ID PATH``): what the real client sent, its quoting included, as the device got it.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import socketserver
import stat
import struct
import subprocess
import threading

from edge_sam.targets.devices.emulated import EmulatedTransport, run_in_userland
from edge_sam.targets.devices.transport import TransportError

# What a recent adbd says it can do, of what this server answers (the client picks its
# protocols by it: shell v2 returns the exit status; stat_v2; push makes parent folders itself).
FEATURES = "shell_v2,stat_v2,fixed_push_mkdir"
SCRATCH = "/data/local/tmp"
SYNC_DATA_MAX = 64 * 1024
SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT = 1, 2, 3
TRANSPORT_ID = 1
SHELL_TIMEOUT_S = 3600.0


def client_version(adb: str) -> int:
    """The server version ``adb`` expects (``Android Debug Bridge version 1.0.N``): a server that
    answers another is killed by the client, which then starts its own."""
    out = subprocess.run([adb, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version \d+\.\d+\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the version of {adb}: {out.strip()}")
    return int(match.group(1))


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeAdbServer:
    """The server on 127.0.0.1 (a free port: ``port``), serving ``serial`` from ``place``, while
    the ``with`` block lasts."""

    def __init__(self, place: EmulatedTransport, serial: str, version: int) -> None:
        self.place, self.serial, self.version = place, serial, version
        self.services: list[str] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        self._tcp = _Server(("127.0.0.1", 0), Handler)
        self.port = self._tcp.server_address[1]
        place.host_path(SCRATCH).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._tcp.serve_forever, name="fake-adb-server", daemon=True)

    def __enter__(self) -> FakeAdbServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._tcp.shutdown()
        self._tcp.server_close()
        self._thread.join()

    # -- the host protocol ----------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        try:
            service = self._next_service(sock)
            if service.startswith("host"):
                if not self._host_service(sock, service):
                    return
                service = self._next_service(sock)
            self._device_service(sock, service)
        except ConnectionError:
            pass  # the client went away

    def _next_service(self, sock: socket.socket) -> str:
        service = _read(sock, int(_read(sock, 4), 16)).decode()
        self.services.append(service)
        return service

    def _host_service(self, sock: socket.socket, service: str) -> bool:
        """Answer a host service; True when it switched the connection to the device."""
        if service == "host:version":
            _okay(sock, f"{self.version:04x}")
        elif service == "host:devices":
            _okay(sock, f"{self.serial}\tdevice\n")
        elif service in ("host:features", "host:host-features"):
            _okay(sock, FEATURES)
        elif service == "host:kill":
            sock.sendall(b"OKAY")
        elif service.startswith(("host:tport:", "host:transport")):
            # host:tport:serial:S or host:tport:any (clients since 2018, answered with a transport
            # id), host:transport:S or host:transport-any (older ones)
            serial = service.split(":", 3)[3] if service.startswith("host:tport:serial:") else (
                service.removeprefix("host:transport:") if service.startswith("host:transport:") else self.serial)
            if serial != self.serial:
                _fail(sock, f"device '{serial}' not found")
                return False
            sock.sendall(b"OKAY" + (struct.pack("<Q", TRANSPORT_ID) if service.startswith("host:tport:") else b""))
            return True
        elif service.startswith("host-serial:"):
            serial, command = service.removeprefix("host-serial:").rsplit(":", 1)
            if serial != self.serial:
                _fail(sock, f"device '{serial}' not found")
            elif command == "features":
                _okay(sock, FEATURES)
            elif command == "get-state":
                _okay(sock, "device")
            else:
                _fail(sock, f"unknown host service {command}")
        else:
            _fail(sock, "unknown host service")
        return False

    # -- the device's services ------------------------------------------------------------------------

    def _device_service(self, sock: socket.socket, service: str) -> None:
        shell = re.fullmatch(r"shell(?:,([^:]*))?:(.*)", service, re.S)
        if shell:
            self._shell(sock, "v2" in (shell.group(1) or "").split(","), shell.group(2))
        elif service == "sync:":
            sock.sendall(b"OKAY")
            self._sync(sock)
        else:
            _fail(sock, f"unknown service {service.split(':')[0]}")

    def _shell(self, sock: socket.socket, v2: bool, command: str) -> None:
        place = self.place
        done = run_in_userland(place.place, place.cpu, command, SHELL_TIMEOUT_S, f"adb:{self.serial}")
        sock.sendall(b"OKAY")
        out, err = done.stdout.encode(), done.stderr.encode()
        if not v2:  # protocol v1: the output as it comes, no exit status
            sock.sendall(out + err)
        else:
            for kind, data in ((SHELL_STDOUT, out), (SHELL_STDERR, err)):
                for start in range(0, len(data), SYNC_DATA_MAX):
                    chunk = data[start:start + SYNC_DATA_MAX]
                    sock.sendall(struct.pack("<BI", kind, len(chunk)) + chunk)
            status = done.returncode if done.returncode >= 0 else 128 - done.returncode
            sock.sendall(struct.pack("<BIB", SHELL_EXIT, 1, status & 0xFF))
        _close_orderly(sock)

    def _sync(self, sock: socket.socket) -> None:
        while True:
            request, length = struct.unpack("<4sI", _read(sock, 8))
            name = request.decode(errors="replace")
            if request == b"QUIT":
                self.services.append("sync:QUIT")
                _close_orderly(sock)
                return
            path = _read(sock, length).decode()
            self.services.append(f"sync:{name} {path}")
            if request == b"STAT":
                st = self._stat(path, follow=False)
                sock.sendall(struct.pack("<4sIII", request, *((st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
                                                              if isinstance(st, os.stat_result) else (0, 0, 0))))
            elif request in (b"STA2", b"LST2"):
                st = self._stat(path, follow=request == b"STA2")
                if isinstance(st, os.stat_result):
                    sock.sendall(struct.pack("<4sIQQIIIIQqqq", request, 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                                             st.st_uid, st.st_gid, st.st_size, int(st.st_atime), int(st.st_mtime),
                                             int(st.st_ctime)))
                else:
                    sock.sendall(struct.pack("<4sI64x", request, st))
            elif request == b"LIST":
                self._list(sock, path)
            elif request == b"SEND":
                self._receive_file(sock, path)
            elif request == b"RECV":
                self._send_file(sock, path)
            else:
                _sync_fail(sock, f"unknown sync request {name}")
                return

    def _stat(self, path: str, follow: bool) -> os.stat_result | int:
        """The file's stat, or its errno."""
        try:
            host = self.place.host_path(path)
            return host.stat() if follow else host.lstat()
        except OSError as error:
            return error.errno or errno.ENOENT
        except TransportError:  # not an absolute path
            return errno.ENOENT

    def _list(self, sock: socket.socket, path: str) -> None:
        folder = self.place.host_path(path)
        if folder.is_dir():
            for entry in [".", "..", *sorted(os.listdir(folder))]:
                st = (folder / entry).lstat()
                name = os.fsencode(entry)
                sock.sendall(struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name))
                             + name)
        sock.sendall(struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))

    def _receive_file(self, sock: socket.socket, spec: str) -> None:
        """SEND "PATH,MODE", then DATA blocks and DONE (the mtime): written as adbd writes it,
        parent folders made; the answer (OKAY or FAIL) after DONE."""
        path, mode = spec.rsplit(",", 1)
        mode_bits, data = int(mode), bytearray()
        while True:
            request, length = struct.unpack("<4sI", _read(sock, 8))
            if request == b"DONE":
                mtime = length
                break
            if request != b"DATA":
                _sync_fail(sock, f"invalid data message {request!r}")
                return
            data += _read(sock, length)
        try:
            host = self.place.host_path(path)
            host.parent.mkdir(parents=True, exist_ok=True)
            if host.is_symlink():
                host.unlink()
            if stat.S_ISLNK(mode_bits):
                os.symlink(bytes(data).rstrip(b"\0"), host)
            else:
                host.write_bytes(bytes(data))
                os.chmod(host, stat.S_IMODE(mode_bits))
                os.utime(host, (mtime, mtime))
        except (OSError, TransportError) as failure:
            _sync_fail(sock, f"couldn't create file: {getattr(failure, 'strerror', None) or failure}")
            return
        sock.sendall(struct.pack("<4sI", b"OKAY", 0))

    def _send_file(self, sock: socket.socket, path: str) -> None:
        try:
            data = self.place.host_path(path).read_bytes()
        except (OSError, TransportError) as failure:
            _sync_fail(sock, getattr(failure, "strerror", None) or str(failure))
            return
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start:start + SYNC_DATA_MAX]
            sock.sendall(struct.pack("<4sI", b"DATA", len(chunk)) + chunk)
        sock.sendall(struct.pack("<4sI", b"DONE", 0))


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return bytes(data)


def _okay(sock: socket.socket, payload: str) -> None:
    data = payload.encode()
    sock.sendall(b"OKAY" + f"{len(data):04x}".encode() + data)


def _fail(sock: socket.socket, message: str) -> None:
    data = message.encode()
    sock.sendall(b"FAIL" + f"{len(data):04x}".encode() + data)


def _sync_fail(sock: socket.socket, message: str) -> None:
    data = message.encode()
    sock.sendall(struct.pack("<4sI", b"FAIL", len(data)) + data)


def _close_orderly(sock: socket.socket) -> None:
    """Half-close, then read what the client still sends (its stdin) until it closes: closing
    with unread data would reset the connection before the client read the answer."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(30)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
