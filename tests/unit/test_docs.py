"""The docs keep their promises: every setting is documented (docs/settings.md's table,
`.env.example`), every metric docs/consumer.md names is served by `/metrics`, every command-line
flag is in `--help` and in docs/operations.md's command list, and README and the docs it sends
people to quote measured figures only from the generated files."""

from __future__ import annotations

import argparse
import re
import subprocess
import urllib.request
from dataclasses import fields
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.metrics import SPECS, Metrics, MetricsServer
from sentencify.cli import build_parser
from sentencify.settings import Settings
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
SETTINGS = (ROOT / "docs" / "settings.md").read_text()  # the settings table
CONSUMER = (ROOT / "docs" / "consumer.md").read_text()  # the consumer's metrics
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()  # the command list, the benchmarks
# README and the pages that took over its sections; docs/benchmarks.md reads the figures, so is not here.
GUIDE_PAGES = ("README.md", "docs/operations.md", "docs/deploy.md", "docs/consumer.md", "docs/settings.md")
GUIDES = {name: (ROOT / name).read_text() for name in GUIDE_PAGES}
SENTENCIFY = ROOT / ".venv" / "bin" / "sentencify"


def section(text: str, title: str) -> str:
    """A page's `# title` or `## title` section, up to the next `# ` or `## ` heading."""
    match = re.search(rf"^##? {re.escape(title)}\n(.*?)(?=^##? |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def settings_table() -> dict[str, str]:
    """docs/settings.md's table: variable -> its row (a row may name several variables)."""
    rows = {}
    for line in section(SETTINGS, "Settings").splitlines():
        cells = line.split("|")
        if len(cells) > 3 and "`" in cells[1]:
            for var in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]):
                rows[var] = line
    return rows


def test_every_setting_is_in_the_settings_table_and_env_example():
    table = settings_table()
    missing = [v for v in Settings.variables() if v not in table]
    assert not missing, f"add these to docs/settings.md's table: {missing}"
    stale = sorted(set(table) - set(Settings.variables()))
    assert not stale, f"docs/settings.md's table names variables the code does not read: {stale}"
    example = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text()))
    missing = [v for v in Settings.variables() if v not in example]
    assert not missing, f"add these to .env.example (commented out when the default is right): {missing}"


def test_the_tables_defaults_are_the_codes():
    """Where a row names one variable and one plain default, it is the default the code uses."""
    defaults, table = Settings.from_env({}), settings_table()
    for f in fields(Settings):
        var = f.metadata["var"]
        if var not in table:
            continue  # the test above names it
        cells = table[var].split("|")
        named = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1])
        shown = re.fullmatch(r"\s*`([^`]*)`\s*", cells[2])
        if len(named) != 1 or not shown or "$" in shown.group(1):
            continue  # several variables, a description, or a default built from another
        value = getattr(defaults, f.name)
        if isinstance(value, Path):  # shown relative to the checkout
            value = f"./{value.relative_to(ROOT)}"
        if isinstance(value, float):
            assert float(shown.group(1)) == value, f"docs/settings.md's default of {var}"
            continue
        assert shown.group(1) == str(value), f"docs/settings.md's default of {var}"


def _served() -> set[str]:
    """Metric names a fresh consumer's /metrics serves (a counter also as its `_total` sample)."""
    server = MetricsServer(Metrics(), 0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name} | {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def _documented_metrics() -> dict[str, set[str] | None]:
    """`sentencify_consumer_x{a,b}` or `..._x` (same prefix), or `sentencify_ingestion_x` (the
    consumer's ingestion-gap metric), in docs/consumer.md -> its labels (None: not given)."""
    named: dict[str, set[str] | None] = {}
    for prefix, name, labels in re.findall(r"`(sentencify_consumer_|sentencify_ingestion_|\.\.\._)(\w+)(\{[^}`]*\})?`", CONSUMER):
        full = (prefix if prefix == "sentencify_ingestion_" else "sentencify_consumer_") + name
        given = {label.strip() for label in labels.strip("{}").split(",")} if labels else None
        named[full] = given if given is not None else named.get(full)
    return named


def test_every_metric_the_consumer_page_names_is_served_with_its_labels():
    served = _served()
    named = _documented_metrics()
    assert len(named) >= 15, "docs/consumer.md lists the consumer's metrics"
    missing = sorted(set(named) - served)
    assert not missing, f"docs/consumer.md names metrics /metrics does not serve: {missing}"
    for name, labels in named.items():
        if labels is not None:
            assert labels == set(SPECS[name].labels), f"docs/consumer.md's labels of {name}: {labels} vs {SPECS[name].labels}"
    unnamed = sorted(set(SPECS) - set(named))
    assert not unnamed, f"metrics the consumer serves that docs/consumer.md does not name: {unnamed}"
    for family in ("process_", "python_"):
        assert f"`{family}*`" in CONSUMER and any(n.startswith(family) for n in served), family


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _documented(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(long option strings, positional choices) a user may type; hidden (SUPPRESS) ones left out."""
    flags: list[str] = []
    choices: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            flags += [o for o in action.option_strings if o.startswith("--")] or action.option_strings[:1]
        elif action.choices:
            choices += [str(c) for c in action.choices]
    return flags, choices


def _command_list() -> dict[str, str]:
    """docs/operations.md's command list (the code block of `## Command line`): subcommand -> its lines."""
    block = re.search(r"```bash\n(.*?)```", section(OPERATIONS, "Command line"), re.S)
    assert block, "docs/operations.md's '## Command line' has no command list"
    lines: dict[str, str] = {}
    for line in block.group(1).splitlines():
        match = re.match(r"\s*\S*sentencify (\S+)(.*)", line)
        if match:
            lines[match.group(1)] = lines.get(match.group(1), "") + " " + match.group(2)
    return lines


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_flag_is_in_help_and_in_the_command_list(command):
    flags, choices = _documented(_subcommands()[command])
    out = subprocess.run([str(SENTENCIFY), command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    listed = _command_list()
    assert command in listed, f"docs/operations.md's command list lacks `sentencify {command}`"
    for flag in flags:
        assert flag in out.stdout, f"`sentencify {command} --help` does not show {flag}"
        assert re.search(rf"{re.escape(flag)}\b", listed[command]), (
            f"docs/operations.md's command list lacks `sentencify {command} {flag}`"
        )
    for choice in choices:
        assert re.search(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", listed[command]), (
            f"docs/operations.md's command list lacks `sentencify {command} {choice}`"
        )


def test_top_level_flags_and_every_command_are_in_help_and_the_command_list():
    out = subprocess.run([str(SENTENCIFY), "--help"], capture_output=True, text=True, timeout=60, check=False)
    flags, _ = _documented(build_parser())
    for flag in flags:
        assert flag in out.stdout and flag in section(OPERATIONS, "Command line"), flag
    for command in _subcommands():
        assert command in out.stdout, command
    assert set(_command_list()) <= set(_subcommands()), "docs/operations.md lists a command the CLI does not have"


# A measured figure typed into prose: a rate, a duration in minutes and seconds, a peak RSS, a ratio.
TYPED_FIGURE = re.compile(r"\d[\d,.]* events/s|\d+ min \d+ s|peak[ _]rss[ _a-z]*[= ]\d+|\b[a-z]+/[a-z]+=\d+\.\d+", re.I)
WRITES = re.compile(r"""write_figures\(["']([a-z0-9_-]+)["']|-m bench\.report ([a-z0-9_-]+)""")


def test_the_docs_quote_measured_figures_only_from_the_generated_files():
    """Measured figures live in docs/benchmarks/<name>.md (bench/report.py); docs/operations.md
    links each file a benchmark or the demo writes (README the demo's), and neither README nor
    the pages it sends people to retype their figures."""
    sources = [*(ROOT / "bench").glob("*.py"), ROOT / "scripts" / "demo.sh"]
    written = {a or b for path in sources for a, b in WRITES.findall(path.read_text())}
    assert {"ingest", "chain", "demo"} <= written, written
    for name in written:
        assert f"](benchmarks/{name}.md)" in OPERATIONS, f"docs/operations.md does not link benchmarks/{name}.md"
    assert "](docs/benchmarks/demo.md)" in README, "README does not link docs/benchmarks/demo.md"
    for page, text in GUIDES.items():
        typed = TYPED_FIGURE.findall(text)
        assert not typed, f"{page} retypes measured figures: {typed} (link docs/benchmarks/ instead)"


def test_every_test_the_docs_name_exists():
    """README and docs/*.md point at tests by path (`tests/.../x.py`) and by `x.py::name`."""
    files = {p.name: p for p in (ROOT / "tests").rglob("*.py")}
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text()
        for path in set(re.findall(r"\btests/[\w/]+\.py", text)):
            assert (ROOT / path).is_file(), f"{doc.name} names {path}, which does not exist"
        for file, name in set(re.findall(r"\b(test_\w+\.py)::(test_\w+)", text)):
            assert file in files and re.search(rf"def {name}\b", files[file].read_text()), f"{doc.name}: {file}::{name}"


def test_readme_is_a_newcomers_page_that_links_the_rest():
    """README stays short, shows the test command `.ci/run` runs on its first screen, and links
    each page its sections moved to."""
    lines = README.splitlines()
    assert len(lines) <= 150, f"README has {len(lines)} lines: move the detail to docs/"
    assert "make test" in "\n".join(lines[:40]), "README's first screen lacks `make test`"
    for page in ("operations", "deploy", "consumer", "settings", "design"):
        assert f"](docs/{page}.md)" in README, f"README does not link docs/{page}.md"
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
