"""Run a command where nothing can leave the machine, and write down every attempt to leave.

For the privacy tests (dbt/test_privacy.py): "nothing leaves the machine" is proven by running the
real command in a Linux network namespace of its own, which has no way out, while recording
each attempt it makes to reach another machine, so that a test can assert there was none (and
a control test that an attempt, when there is one, is seen).

Inside the namespace (`unshare --net --mount`, as root):

- loopback is up, so what runs on the machine itself still works (a local server, a test's own);
- /etc/resolv.conf points at a DNS server of ours on 127.0.0.1 that answers every query "no
  such name" at once and records the name and type asked. Reaching a host by name starts with
  such a query whatever the program is written in (Python, DuckDB's C++ client, Rust); the
  host's nsswitch.conf is kept but for its `hosts` line (files, then DNS), and nscd, if any,
  is hidden, so every lookup comes here;
- the default routes, IPv4 and IPv6, lead into a TUN device whose packets are read and
  recorded (protocol, address, port): a connection to a literal address, or a program's own
  DNS server, shows up there. Nothing answers those packets and nothing forwards them.

Usage: ``python netsandbox.py RECORD.json -- COMMAND...`` inside the namespace; tests call
`run`, which starts it there. Only the standard library: it runs before anything is set up.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TUN_NAME = "mpout0"
# Addresses from the documentation ranges (RFC 5737, RFC 3849): never anyone's real address.
TUN_IPV4 = "192.0.2.1/32"
TUN_IPV6 = "2001:db8::1/128"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DNS_TYPES = {1: "A", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 65: "HTTPS"}
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
ICMPV6_ECHO_REQUEST = 128


@dataclass(frozen=True)
class Outcome:
    """What a command did in the sandbox: its exit code, its output, and its attempts."""

    returncode: int
    output: str
    attempts: list[dict[str, object]]

    def describe_attempts(self) -> str:
        """One line per distinct attempt, for an assertion message."""
        lines = sorted({describe(a) for a in self.attempts})
        return "; ".join(lines) if lines else "none"

    def looked_up(self) -> set[str]:
        return {str(a["name"]) for a in self.attempts if a["kind"] == "dns"}


def describe(attempt: Mapping[str, object]) -> str:
    if attempt["kind"] == "dns":
        return f"DNS lookup of {attempt['name']} ({attempt['type']})"
    where = f"{attempt['to']}:{attempt['port']}" if "port" in attempt else str(attempt["to"])
    name = f" (DNS lookup of {attempt['name']})" if "name" in attempt else ""
    return f"{attempt['protocol']} packet to {where}{name}"


def unshare_command() -> list[str]:
    # --kill-child: if the test stops `unshare`, the sandbox and its command go with it.
    return ["unshare", "--net", "--mount", "--fork", "--kill-child"]


@cache
def unavailable() -> str | None:
    """None when this machine can run the sandbox; otherwise why not, in one line."""
    if sys.platform != "linux":
        return f"network namespaces are Linux only (this is {sys.platform})"
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2"), ("mount", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (package {package})"
    if os.geteuid() != 0:
        return "the network sandbox needs root (a namespace with a TUN device and a bind mount)"
    try:
        probe = run(["true"], cwd=Path.cwd(), env=os.environ, timeout_s=60)
    except RuntimeError as exc:
        return str(exc)
    if probe.returncode != 0 or probe.attempts:
        return f"the sandbox does not work here: `true` gave {probe.returncode}, {probe.output}"
    return None


def run(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float) -> Outcome:
    """Run ``command`` in a fresh network namespace; its output and every attempt to leave.

    Raises RuntimeError when the sandbox itself could not be set up (then nothing was run).
    """
    with tempfile.TemporaryDirectory(prefix="mediapulse-netsandbox-") as tmp:
        record = Path(tmp) / "record.json"
        cmd = [*unshare_command(), sys.executable, __file__, str(record), "--", *command]
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise RuntimeError(
                f"{' '.join(command)} did not finish within {timeout_s:.0f} s in the network "
                f"sandbox; its output:\n{output[-4000:]}"
            ) from None
        if not record.exists():
            raise RuntimeError(
                f"the network sandbox could not run {' '.join(command)} (exit code "
                f"{proc.returncode}): {output.strip()[-4000:]}"
            )
        attempts = json.loads(record.read_text())
    return Outcome(returncode=proc.returncode, output=output, attempts=attempts)


# --- inside the namespace ---------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _open_tun() -> int:
    """A TUN device whose outgoing packets this process reads; it lives as long as the fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", TUN_NAME.encode(), IFF_TUN | IFF_NO_PI))
    _ip("link", "set", TUN_NAME, "up")
    _ip("addr", "add", TUN_IPV4, "dev", TUN_NAME)
    _ip("route", "add", "default", "dev", TUN_NAME)
    try:
        _ip("-6", "addr", "add", TUN_IPV6, "dev", TUN_NAME, "nodad")
        _ip("-6", "route", "add", "default", "dev", TUN_NAME)
    except (subprocess.CalledProcessError, FileNotFoundError):
        # IPv6 is off in this kernel: an IPv6 connection then fails on the spot (no route),
        # so still nothing leaves, and one to a name is still recorded as its DNS lookup.
        pass
    return fd


def _bind_mount(source: Path, target: str) -> None:
    subprocess.run(["mount", "--bind", str(source), target], check=True, capture_output=True)


def _resolve_here(scratch: Path) -> socket.socket:
    """Every name lookup of every process in the namespace goes to the returned socket."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    server.setblocking(False)
    resolv = scratch / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    _bind_mount(resolv, "/etc/resolv.conf")
    nsswitch_path = Path("/etc/nsswitch.conf")
    if nsswitch_path.exists():
        lines = nsswitch_path.read_text().splitlines()
        kept = [line for line in lines if not line.strip().startswith("hosts:")]
        nsswitch = scratch / "nsswitch.conf"
        nsswitch.write_text("\n".join([*kept, "hosts: files dns", ""]))
        _bind_mount(nsswitch, str(nsswitch_path))
    for nscd in ("/run/nscd", "/var/run/nscd"):
        if Path(nscd).is_dir():
            # glibc asks a running nscd first, over a socket that reaches outside the namespace
            subprocess.run(["mount", "-t", "tmpfs", "none", nscd], check=True)
    return server


def dns_question(message: bytes) -> tuple[str, str, int] | None:
    """The (name, type, end offset) of a DNS query's first question, None if it is not one."""
    if len(message) < 12 or message[2] & 0x80 or int.from_bytes(message[4:6]) < 1:
        return None
    labels, i = [], 12
    while i < len(message) and message[i] != 0:
        size = message[i]
        if size & 0xC0:  # a compression pointer cannot occur in a query's first name
            return None
        labels.append(message[i + 1 : i + 1 + size].decode("ascii", "replace"))
        i += 1 + size
    if i + 5 > len(message):
        return None
    qtype = int.from_bytes(message[i + 1 : i + 3])
    return ".".join(labels), DNS_TYPES.get(qtype, str(qtype)), i + 5


def no_such_name(query: bytes, end: int) -> bytes:
    """The answer to ``query``: NXDOMAIN, its question echoed, so the asker gives up at once."""
    flags = (0x80 | (query[2] & 0x79)) << 8 | 0x80 | 3  # response, same opcode and RD, RA
    return query[:2] + flags.to_bytes(2) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]


def packet_attempt(packet: bytes) -> dict[str, object] | None:
    """What an IP packet sent into the TUN device tried, or None for the kernel's own
    housekeeping (IPv6 router solicitations and multicast reports, not a program's doing)."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        protocol, header = packet[9], (packet[0] & 0x0F) * 4
        to = socket.inet_ntop(socket.AF_INET, packet[16:20])
    elif version == 6 and len(packet) >= 40:
        protocol, header = packet[6], 40
        to = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        if protocol == 58 and (len(packet) <= header or packet[header] != ICMPV6_ECHO_REQUEST):
            return None
    else:
        return None
    if protocol not in PROTOCOLS:
        return None
    attempt: dict[str, object] = {"kind": "packet", "protocol": PROTOCOLS[protocol], "to": to}
    if protocol in (6, 17) and len(packet) >= header + 4:
        attempt["port"] = int.from_bytes(packet[header + 2 : header + 4])
        if protocol == 17 and attempt["port"] == 53:
            question = dns_question(packet[header + 8 :])
            if question is not None:
                attempt["name"] = question[0]
    return attempt


def _record(dns: socket.socket, tun: int, attempts: list[dict[str, object]], wait: float) -> bool:
    """Read what is waiting (up to ``wait`` seconds for the first); False when nothing was."""
    ready, _, _ = select.select([dns, tun], [], [], wait)
    for source in ready:
        if source is dns:
            message, sender = dns.recvfrom(65535)
            question = dns_question(message)
            if question is not None:
                name, qtype, end = question
                attempts.append({"kind": "dns", "name": name, "type": qtype})
                dns.sendto(no_such_name(message, end), sender)
        else:
            attempt = packet_attempt(os.read(tun, 65535))
            if attempt is not None:
                attempts.append(attempt)
    return bool(ready)


def main(argv: list[str]) -> int:
    record = Path(argv[0])
    command = argv[argv.index("--") + 1 :]
    _ip("link", "set", "lo", "up")
    tun = _open_tun()
    with tempfile.TemporaryDirectory(prefix="netsandbox-") as scratch:
        dns = _resolve_here(Path(scratch))
        attempts: list[dict[str, object]] = []
        proc = subprocess.Popen(command)
        while proc.poll() is None:
            _record(dns, tun, attempts, wait=0.2)
        # The command has exited: whatever it sent is queued already.
        while _record(dns, tun, attempts, wait=0.0):
            pass
    record.write_text(json.dumps(attempts, indent=1))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
