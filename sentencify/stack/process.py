"""Start and stop background servers by PID file, and wait for them to become healthy."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sentencify.errors import ServiceError


class StackError(ServiceError, RuntimeError):
    """A local service could not be started or stopped; the message says what to look at."""


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_running(pid: int | None, expect_in_cmdline: str | None = None) -> bool:
    """Alive, and (when given) really the program we started: PIDs get reused after a reboot."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if expect_in_cmdline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            return False
        if expect_in_cmdline not in cmdline:
            return False
    try:  # a zombie is not running
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


# Below Linux's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default): a port the
# kernel picked with bind(0) is soon reused for some client's outgoing connection, and a test stack
# that starts its servers seconds later then found its port taken ("Address already in use").
_PRIVATE_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range (so no outgoing connection takes it)."""
    for _ in range(200):
        port = random.choice(_PRIVATE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StackError(f"no free port in {_PRIVATE_PORTS.start}-{_PRIVATE_PORTS.stop - 1}")


def spawn(
    argv: list[str],
    *,
    pid_file: Path,
    log_file: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> int:
    """Start `argv` detached (own session, so Ctrl-C in the shell does not reach it); returns its PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            user=user,
            group=user,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, timeout: float = 15.0, sig: int = signal.SIGTERM, group: bool = False) -> bool:
    """SIGTERM (or `sig`), wait, then SIGKILL; True when the process is gone.

    `group`: signal its whole process group (servers that fork workers, started by `spawn`).
    """
    kill = os.killpg if group else os.kill
    try:
        kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            _reap(pid)
            return True
        time.sleep(0.1)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    time.sleep(0.3)
    _reap(pid)
    return not is_running(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 600 from the start, not after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT


def stored_secret(path: Path, make: Callable[[], str]) -> str:
    """A per-stack secret, created once and kept (mode 600) in the git-ignored stack dir."""
    if not path.exists():
        write_private(path, make())
    path.chmod(0o600)
    return path.read_text().strip()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 (a health probe may fail in many ways while starting)
            last_error = exc
        time.sleep(0.2)
    hint = f"; see {log_file}" if log_file else ""
    tail = ""
    if log_file and log_file.exists():
        tail = "\n--- last lines of the log ---\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    raise StackError(f"{what} did not become healthy within {timeout:.0f}s (last error: {last_error}){hint}{tail}")
