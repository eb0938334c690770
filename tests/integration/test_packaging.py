"""`pip install .` in a fresh virtualenv gives a working CLI: every command answers `--help`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv

from tests.helpers import ROOT


def commands() -> list[list[str]]:
    from sentencify.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return [[]] + [[name] for name in sub.choices]


def test_a_fresh_venv_with_the_base_install_runs_every_commands_help(tmp_path):
    # A copy of the tracked files: setuptools builds in the source tree, which must stay clean.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    out = subprocess.run(
        [str(pip), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cli = env_dir / "bin" / "sentencify"
    for command in commands():
        run = subprocess.run(
            [str(cli), *command, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
        )
        assert run.returncode == 0, f"sentencify {' '.join(command)} --help: {run.stderr[-2000:]}"
        assert "usage:" in run.stdout
    consumer = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "consumer", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert consumer.returncode == 0, consumer.stderr[-2000:]
    assert sys.prefix != str(env_dir)
