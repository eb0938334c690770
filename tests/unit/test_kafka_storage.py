"""The local broker's object store lists one directory, with the same pages as localbucket's whole-bucket walk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import localbucket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentencify.stack import kafka_storage

_parts = st.sampled_from(["a", "b", "ab", "records", "0001", "0002", "x.json"])
_keys = st.lists(st.lists(_parts, min_size=1, max_size=4).map("/".join), min_size=0, max_size=25, unique=True)


def _tree(keys: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="ks-"))
    for key in keys:
        path = root / key
        if any(p.is_file() for p in [*path.parents][: len(key.split("/")) - 1]):
            continue  # a key that is another's directory cannot be a file too
        if path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    keys=_keys,
    prefix=st.lists(_parts, max_size=3).map("/".join) | st.lists(_parts, max_size=3).map(lambda p: "/".join(p) + "/"),
    delimiter=st.sampled_from(["", "/"]),
    marker=st.lists(_parts, max_size=4).map("/".join),
    marker_is_prefix=st.booleans(),
    max_keys=st.integers(0, 6),
)
def test_listing_one_directory_gives_the_pages_of_the_whole_bucket_walk(
    keys, prefix, delimiter, marker, marker_is_prefix, max_keys
):
    root = _tree(keys)
    ours = kafka_storage.handler_class().__new__(kafka_storage.handler_class())
    stock = localbucket.S3Handler.__new__(localbucket.S3Handler)
    args = (root, prefix, delimiter, marker, marker_is_prefix and bool(marker), max_keys)
    assert ours._list_entries(*args) == stock._list_entries(*args)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from('&<>"\n\t'), max_size=12)


@given(
    texts=st.lists(st.one_of(st.none(), _text), min_size=1, max_size=6),
    attribute=_text,
)
def test_the_xml_answer_is_elementtrees_byte_for_byte(texts, attribute):
    import xml.etree.ElementTree as ET

    root = ET.Element("ListBucketResult", xmlns=attribute)
    parent = root
    for i, text in enumerate(texts):
        child = localbucket.sub_element(parent, f"T{i}", text) if text is not None else ET.SubElement(parent, f"E{i}")
        if i % 2:
            parent = child
    assert kafka_storage.xml_bytes(root) == ET.tostring(root, encoding="UTF-8", xml_declaration=True)
