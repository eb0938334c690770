"""bench/report.py: the one writer of measured figures (docs/benchmarks/<name>.md)."""

from __future__ import annotations

import re

import pytest

from bench import report


def test_figures_file_has_date_machine_commit_and_the_lines_verbatim(tmp_path):
    lines = ["ratios a/b=1.13 a/c=17.3", "peak_rss_mb=238"]
    path = report.write_figures("ingest", lines, command="make bench-ingest", out_dir=tmp_path)
    assert path == tmp_path / "ingest.md"
    text = path.read_text()
    assert text.startswith(report.HEADER)
    assert re.search(r"^- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", text, re.M)
    assert re.search(r"^- machine: .+\d+ cores", text, re.M)
    assert re.search(r"^- commit: \S+", text, re.M)
    assert re.search(r"^- load average when written \(1, 5, 15 min\): \d+\.\d, \d+\.\d, \d+\.\d$", text, re.M)
    assert "- command: `make bench-ingest`" in text
    assert "```\nratios a/b=1.13 a/c=17.3\npeak_rss_mb=238\n```" in text


def test_a_new_run_replaces_the_old_figures(tmp_path):
    report.write_figures("chain", ["old 1"], out_dir=tmp_path)
    report.write_figures("chain", ["new 2"], out_dir=tmp_path)
    text = (tmp_path / "chain.md").read_text()
    assert "new 2" in text and "old 1" not in text


@pytest.mark.parametrize("name", ["", "../x", "Ingest", "a b", "x.md"])
def test_a_bad_name_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="figures name"):
        report.write_figures(name, ["x"], out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_no_lines_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no figures"):
        report.write_figures("demo", [], out_dir=tmp_path)


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "OUT_DIR", tmp_path)
    assert report.main(["demo", "--command", "make demo", "demo took 214s", "stack 39s"]) == 0
    assert "demo took 214s\nstack 39s" in (tmp_path / "demo.md").read_text()
    assert report.main(["Bad Name", "x"]) == 2
    assert "figures name" in capsys.readouterr().err
