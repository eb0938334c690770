"""The server versions the chain needs (sentencify.stores.versions): parsing and comparison."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentencify.stores import versions
from sentencify.stores.versions import UnsupportedServer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("8.2.11", (8, 2, 11)),
        ("5.2.0-rc1", (5, 2, 0)),
        ("15.4 (Debian 15.4-1.pgdg120+1)", (15, 4)),
        ("v1.12.0", (1, 12, 0)),
        ("7.0.15", (7, 0, 15)),
    ],
)
def test_parse_reads_the_leading_numbers(text, parsed):
    assert versions.parse(text) == parsed


def test_parse_refuses_text_without_a_version():
    with pytest.raises(ValueError):
        versions.parse("unknown")


@pytest.mark.parametrize(("number", "version"), [(150004, (15, 4)), (100000, (10, 0)), (90605, (9, 6, 5)), (170002, (17, 2))])
def test_postgres_integer_versions(number, version):
    assert versions.postgres_version(number) == version


@pytest.mark.parametrize(
    ("store", "ok", "too_old"),
    [
        ("MongoDB", ["5.2.0", "5.2", "6.0.1", "8.2.11"], ["5.0.3", "5.1.1", "4.4.29"]),
        ("Redis", ["4.0.0", "7.0.15"], ["3.2.12"]),
        ("Qdrant", ["1.12.0", "1.15.4"], ["1.11.9", "0.11.0"]),
    ],
)
def test_require_accepts_the_minimum_and_later_and_names_the_store_when_older(store, ok, too_old):
    for v in ok:
        versions.require(store, versions.parse(v))
    for v in too_old:
        with pytest.raises(UnsupportedServer, match=rf"^{store} {v} is too old: sentencify needs {store} "):
            versions.require(store, versions.parse(v))


def test_the_mongodb_message_is_one_line_that_says_why_and_what_to_do():
    with pytest.raises(UnsupportedServer) as raised:
        versions.require("MongoDB", (5, 0, 3))
    expected = "MongoDB 5.0.3 is too old: sentencify needs MongoDB 5.2 or later (the ETL's join uses $top); upgrade it"
    assert str(raised.value) == expected


@given(
    minimum=st.lists(st.integers(0, 30), min_size=1, max_size=4).filter(lambda m: any(m)),
    bump=st.integers(0, 3),
    extra=st.lists(st.integers(0, 30), max_size=2),
)
def test_require_is_the_minimum_and_everything_above_it(minimum, bump, extra):
    versions.MINIMUM["Test"] = (tuple(minimum), "a test")
    try:
        versions.require("Test", tuple(minimum))  # the minimum itself
        versions.require("Test", (*minimum, *extra))  # with a patch number appended
        if bump < len(minimum):  # any part raised: newer
            versions.require("Test", tuple(x + 1 if i == bump else x for i, x in enumerate(minimum)))
        last = max(i for i, x in enumerate(minimum) if x)  # the last non-zero part lowered: older
        lower = (*minimum[:last], minimum[last] - 1, *(99 for _ in minimum[last + 1 :]))
        with pytest.raises(UnsupportedServer):
            versions.require("Test", lower)
    finally:
        del versions.MINIMUM["Test"]


def test_check_once_asks_the_server_once_per_process_and_again_after_a_refusal():
    asked = []

    def read_old():
        asked.append(1)
        return (1, 0)

    versions.MINIMUM["Once"] = ((2, 0), "a test")
    try:
        for _ in range(2):
            with pytest.raises(UnsupportedServer):
                versions.check_once("Once", read_old)
        assert len(asked) == 2  # a refused version is not remembered
        versions.check_once("Once", lambda: (asked.append(1), (2, 1))[1])
        versions.check_once("Once", read_old)
        assert len(asked) == 3  # the accepted one is
    finally:
        del versions.MINIMUM["Once"]
        versions._checked.pop("Once", None)
