"""Start and stop ``simple_switch``: pcap-file mode (no root) or on interfaces.

In pcap-file mode (``--use-files``) port P named ``name`` reads
``name_in.pcap`` and writes ``name_out.pcap`` in the work directory, after
waiting ``wait_seconds`` (the time the control plane has to configure the
switch over thrift before the first packet is processed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .tools import SIMPLE_SWITCH, require_tools, tool_path

__all__ = ["SimpleSwitch", "free_tcp_port"]

_device_ids = iter(range(1, 1 << 30))


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SimpleSwitch:
    """One simple_switch process. Use as a context manager, or start()/stop()."""

    json_path: Path
    #: port number -> interface name (interface mode) or pcap file stem (file mode)
    ports: dict[int, str]
    workdir: Path
    #: None: interface mode; else pcap-file mode, processing starts after this wait
    pcap_wait_seconds: int | None = None
    thrift_port: int = 0
    #: run inside this network namespace (interface mode; needs root)
    netns: str | None = None
    #: bmv2 log file (in workdir) and level; None: no logging (fastest)
    log_level: str | None = None
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    started_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.json_path = Path(self.json_path).resolve()  # simple_switch runs in workdir
        self.workdir = Path(self.workdir).resolve()
        if not self.ports:
            raise ValueError("simple_switch needs at least one port")
        for port, name in self.ports.items():
            if not 0 <= port < 512 or not name or "@" in name:
                raise ValueError(f"bad port {port}@{name!r}")
        if self.pcap_wait_seconds is not None and self.pcap_wait_seconds < 0:
            raise ValueError("pcap_wait_seconds must be >= 0")
        if self.thrift_port == 0:
            self.thrift_port = free_tcp_port()

    def command(self) -> list[str]:
        device = next(_device_ids)
        cmd = [tool_path(SIMPLE_SWITCH) or SIMPLE_SWITCH, "--thrift-port", str(self.thrift_port),
               "--device-id", str(device),
               # a private notification socket: several switches can run at once
               "--notifications-addr", f"ipc://{self.workdir}/notifications-{device}.ipc"]
        for port, name in sorted(self.ports.items()):
            cmd += ["-i", f"{port}@{name}"]
        if self.pcap_wait_seconds is not None:
            cmd += ["--use-files", str(self.pcap_wait_seconds)]
        if self.log_level:
            cmd += ["--log-file", str(self.workdir / "simple_switch"), "--log-flush",
                    "-L", self.log_level]
        cmd.append(str(self.json_path))
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, ready_timeout: float = 20.0) -> "SimpleSwitch":
        require_tools(SIMPLE_SWITCH)
        if not self.json_path.exists():
            raise FileNotFoundError(f"{self.json_path}: build it first (fpisa p4 build)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        stderr = open(self.workdir / "simple_switch.stderr", "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=stderr,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        stderr.close()
        self.started_at = time.monotonic()
        self._wait_for_thrift(ready_timeout)
        return self

    def _wait_for_thrift(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"simple_switch exited with {self.process.returncode}: "
                                   f"{self.stderr_text()[-2000:]}")
            if self._thrift_open():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"simple_switch did not open thrift port {self.thrift_port} "
                           f"within {timeout} s")

    def _thrift_open(self) -> bool:
        if self.netns:
            # thrift listens on the namespace's loopback: probe from inside it
            probe = subprocess.run(
                ["ip", "netns", "exec", self.netns, "bash", "-c",
                 f"exec 3<>/dev/tcp/127.0.0.1/{self.thrift_port}"], capture_output=True)
            return probe.returncode == 0
        try:
            with socket.create_connection(("127.0.0.1", self.thrift_port), timeout=0.2):
                return True
        except OSError:
            return False

    def stderr_text(self) -> str:
        path = self.workdir / "simple_switch.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def seconds_until_processing(self) -> float:
        """pcap mode: time left before simple_switch starts reading packets."""
        if self.pcap_wait_seconds is None:
            return 0.0
        return self.started_at + self.pcap_wait_seconds - time.monotonic()

    def in_pcap(self, port: int) -> Path:
        return self.workdir / f"{self.ports[port]}_in.pcap"

    def out_pcap(self, port: int) -> Path:
        return self.workdir / f"{self.ports[port]}_out.pcap"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to this switch's own process group, SIGKILL if it lingers."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def __enter__(self) -> "SimpleSwitch":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
