"""What a measured run costs besides its wall time: its own CPU, the local servers' CPU, MongoDB round trips, peak RSS.

Issue 30 item 6: on this machine most of the chain's CPU is the local MongoDB-protocol server, so
throughput measures the stand-in more than the code. These figures split it:

- client CPU: user + system CPU of the measuring process (`resource.getrusage(RUSAGE_SELF)`), and
  the part of it spent inside qdrant-client's local mode (the in-process stand-in for a Qdrant
  server, timed by wrapping `QdrantLocal`'s methods), which a real deployment does not pay.
- server CPU: utime + stime of the local servers (MongoDB-protocol server, Redis, PostgreSQL with
  its backends) from /proc/<pid>/stat of their process trees, found by the stack's pid files.
  Each process counts its own time plus its reaped children's (cutime + cstime): a PostgreSQL
  backend that ends moves its time into the postmaster's, so the sum never goes back.
- round trips: MongoDB commands the process sent (a pymongo CommandListener; getMore counted
  apart), registered before any client is made.
- peak RSS: VmHWM of the process (ru_maxrss would carry a forking parent's peak across exec).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import time
from collections import Counter
from pathlib import Path

from pymongo import monitoring

SERVERS = ("mongodb", "redis", "postgres")
_TICK = os.sysconf("SC_CLK_TCK")


class RoundTrips(monitoring.CommandListener):
    """Counts MongoDB commands sent, by name (each is one request and one reply)."""

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.by_name[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


ROUND_TRIPS = RoundTrips()
_installed: set[str] = set()


def install() -> None:
    """Count round trips and time the Qdrant local mode from now on; clients made earlier are not counted."""
    if "round_trips" not in _installed:
        monitoring.register(ROUND_TRIPS)
        _installed.add("round_trips")
    if "qdrant_local" not in _installed:
        _clock_qdrant_local()
        _installed.add("qdrant_local")


_qdrant_local_cpu = 0.0
_depth = 0


def _clock_qdrant_local() -> None:
    """Wrap QdrantLocal's public methods (and __init__, which loads the collections) to sum the
    process CPU spent inside them; nested calls count once."""
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal
    except ImportError:  # no qdrant-client: nothing to exclude
        return

    def clocked(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            global _qdrant_local_cpu, _depth
            _depth += 1
            began = time.process_time() if _depth == 1 else 0.0
            try:
                return method(*args, **kwargs)
            finally:
                if _depth == 1:
                    _qdrant_local_cpu += time.process_time() - began
                _depth -= 1

        return wrapper

    for name, attr in list(vars(QdrantLocal).items()):
        if callable(attr) and (name == "__init__" or not name.startswith("_")):
            setattr(QdrantLocal, name, clocked(attr))


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(ppid, own + reaped children's CPU seconds) of one process; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), numbered from 1 with pid and name.
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each root process and its live descendants (plus what they reaped)."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _proc_stat(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                total += stats[pid][1]
                todo.extend(children.get(pid, []))
        out[name] = total
    return out


def server_pids(settings) -> dict[str, int]:
    """PIDs of the local stack's MongoDB-protocol server, Redis and PostgreSQL (those running), from their pid files."""
    from sentencify import stack
    from sentencify.stack.process import read_pid

    pids = {}
    for service in stack.services(settings):
        if service.name in SERVERS and (pid := read_pid(service.pid_file)) is not None:
            pids[service.name] = pid
    return pids


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass(frozen=True)
class Reading:
    """What this process (and the servers) had used at one moment."""

    wall: float
    cpu: float
    qdrant_local: float
    commands: dict[str, int]
    servers: dict[str, float]


@dataclasses.dataclass
class Cost:
    """What one measured run used: seconds, CPU seconds, MongoDB commands; peak RSS in MB when measured."""

    seconds: float
    client_cpu: float
    qdrant_local_cpu: float = 0.0
    commands: int = 0
    get_mores: int = 0
    server_cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_rss_mb: float | None = None

    def per_session(self, sessions: int) -> str:
        """`client X ms (Qdrant local Y), servers Z ms (mongodb a, redis b, postgres c), R round trips/1000 (getMore G)`."""
        ms = lambda seconds: seconds * 1000 / max(sessions, 1)  # noqa: E731
        servers = ", ".join(f"{name} {ms(cpu):.2f}" for name, cpu in self.server_cpu.items())
        return (
            f"client CPU {ms(self.client_cpu):.2f} ms/session"
            + (f" (Qdrant local mode {ms(self.qdrant_local_cpu):.2f})" if self.qdrant_local_cpu >= 0.0005 * sessions else "")
            + f", servers {ms(sum(self.server_cpu.values())):.2f} ms/session ({servers})"
            + f", {self.commands * 1000 / max(sessions, 1):.0f} round trips/1000 sessions"
            + f" (getMore {self.get_mores * 1000 / max(sessions, 1):.0f})"
        )

    def client_ms(self, sessions: int) -> float:
        """Client CPU per session without the Qdrant local mode, ms (issue 30's goal compares this)."""
        return (self.client_cpu - self.qdrant_local_cpu) * 1000 / max(sessions, 1)


class Meter:
    """Readings of this process and, given their PIDs, of the local servers."""

    def __init__(self, servers: dict[str, int] | None = None) -> None:
        self.servers = servers or {}

    def read(self) -> Reading:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Reading(
            wall=time.perf_counter(),
            cpu=usage.ru_utime + usage.ru_stime,
            qdrant_local=_qdrant_local_cpu,
            commands=dict(ROUND_TRIPS.by_name),
            servers=tree_cpu(self.servers) if self.servers else {},
        )


def spent(a: Reading, b: Reading, *, peak: bool = False) -> Cost:
    """The cost between two readings (with this process's peak RSS so far when `peak`)."""
    commands = Counter(b.commands)
    commands.subtract(a.commands)
    return Cost(
        seconds=b.wall - a.wall,
        client_cpu=b.cpu - a.cpu,
        qdrant_local_cpu=b.qdrant_local - a.qdrant_local,
        commands=sum(commands.values()),
        get_mores=commands["getMore"],
        server_cpu={name: b.servers[name] - a.servers.get(name, 0.0) for name in b.servers},
        peak_rss_mb=peak_rss_mb() if peak else None,
    )


class PeakTrace:
    """Where a run's Python memory is at its highest: tracemalloc on, a snapshot taken whenever the
    traced total passes its highest so far (checked every `every_s`), and the top lines of the
    highest snapshot by size. Slows the run several times: for finding a growth, not for timing."""

    def __init__(self, every_s: float = 1.0, frames: int = 25) -> None:
        import threading
        import tracemalloc

        self._tm, self._every = tracemalloc, every_s
        self._best = 0
        self._snapshot = None
        self._stop = threading.Event()
        tracemalloc.start(frames)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._every):
            current, _ = self._tm.get_traced_memory()
            if current > self._best * 1.1:
                self._best, self._snapshot = current, self._tm.take_snapshot()

    def top(self, limit: int = 12) -> list[str]:
        """The snapshot at the highest traced memory: its largest allocation sites (file:line, MB, count, the stack)."""
        self._stop.set()
        self._thread.join()
        if self._snapshot is None:
            return []
        snapshot = self._snapshot.filter_traces([self._tm.Filter(False, self._tm.__file__)])
        out = [f"traced {self._best / 1e6:.1f} MB at the highest snapshot"]
        for stat in snapshot.statistics("traceback")[:limit]:
            # Innermost first: where the memory was allocated, then the project's frames that led there.
            inner, *outer = reversed(stat.traceback)
            ours = [f for f in outer if "/sentencify/" in f.filename or "/consumer/" in f.filename][:5]
            frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in [inner, *ours])
            out.append(f"{stat.size / 1e6:7.2f} MB {stat.count:7d} blocks  {frames}")
        return out
