"""Step 3: vector migration: high-consistency examples -> Qdrant real points; synthetic points retire per category.

After a run, for every session the window touched, its point exists exactly when its example is
`high` with a v1 embedding, with the payload of pipeline.md. `full=True` reconciles every example.
The vector is the embedding made storable by `stores.qdrant.unit_vector`; an embedding that has
no direction (a NaN or an infinity) or a point Qdrant refuses quarantines its session
(sentencify.steps.quarantine) and the session has no point; the rest is published.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.database import Database
from qdrant_client import QdrantClient, models

from sentencify import vectorstore
from sentencify.erasure.suppression import suppressed_users
from sentencify.errors import DataError
from sentencify.mongo import find_in
from sentencify.schemas import CATEGORIES
from sentencify.steps.drift import Drift, pages
from sentencify.steps.etl import EXAMPLES
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import chunks, touched_sessions
from sentencify.stores import batching
from sentencify.stores import qdrant as qdrant_rules
from sentencify.window import Window

log = logging.getLogger("sentencify.vectors")

UPSERT_BATCH = 1024  # fewer, larger upserts: most of a local-mode upsert is per call
_FIELDS = {
    "context_embedding": 1,
    "embedding_version": 1,
    "consistency_flag": 1,
    "recommend_session_id": 1,
    "user_id": 1,
    "doc_id": 1,
    "final_category": 1,
    "final_intensity": 1,
    "executed_target_language": 1,
    "was_accepted": 1,
    "created_at": 1,
}


def wanted(example: dict, dim: int) -> bool:
    embedding = example.get("context_embedding") or []
    return (
        example.get("consistency_flag") == "high" and len(embedding) == dim and (example.get("embedding_version") or "v1") == "v1"
    )


class NotStorable(DataError, ValueError):
    """The example's embedding has no float32 form (stores.qdrant.unit_vector)."""


def point(example: dict) -> models.PointStruct:
    """Raises NotStorable when the embedding holds a NaN or an infinity."""
    vector = qdrant_rules.unit_vector(example["context_embedding"])
    if vector is None:
        raise NotStorable("context_embedding holds a value that is not a finite number")
    # model_construct: the fields are built right here, and validating each point again costs
    # as much as reading it; Qdrant (or local mode) checks the vector against the collection.
    return models.PointStruct.model_construct(
        id=vectorstore.point_id(example["_id"]),
        vector=vector,
        payload={
            "example_id": example["_id"],
            "recommend_session_id": example["recommend_session_id"],
            "user_id": example.get("user_id"),
            "doc_id": example.get("doc_id"),
            "category": example.get("final_category"),
            "intensity": example.get("final_intensity"),
            "language": example.get("executed_target_language"),
            "was_accepted": example.get("was_accepted"),
            "source": "real",
            "created_at": int(example["created_at"].timestamp()),
        },
    )


def _points(examples: list[dict], quarantined: Quarantined) -> list[tuple[str, models.PointStruct]]:
    """(session, point) for each example; one that has no storable vector is quarantined."""
    out = []
    for example in examples:
        try:
            out.append((example["_id"], point(example)))
        except NotStorable as exc:
            quarantined.add(example["_id"], "vector_not_finite", exc)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a field of a type no rule expects
            quarantined.add(example["_id"], "point_not_computable", exc)
    return out


def _point_bytes(item: tuple[str, models.PointStruct]) -> int:
    pt = item[1]
    return qdrant_rules.point_bytes(pt.vector, pt.payload or {})  # type: ignore[arg-type]


def upsert(
    qc: QdrantClient,
    collection: str,
    points: list[tuple[str, models.PointStruct]],
    quarantined: Quarantined,
    max_bytes: int = batching.QDRANT_REQUEST_BYTES,
) -> int:
    """Upsert in batches of at most UPSERT_BATCH points and `max_bytes` bytes of JSON
    (stores.batching; QDRANT_MAX_REQUEST_BYTES); a batch refused or timed out for its size is
    sent in halves; a point Qdrant refuses is found by bisection and its session quarantined.
    Returns the number of points written."""
    written = 0

    def write(items: list[tuple[str, models.PointStruct]]) -> None:
        qc.upsert(collection, points=[p for _, p in items], wait=True)

    def write_bounded(items: list[tuple[str, models.PointStruct]]) -> None:
        batching.write_split(items, write, qdrant_rules.maybe_too_large)

    for batch in batching.batches(points, UPSERT_BATCH, max_bytes, _point_bytes):
        refused = bisect(batch, write_bounded, qdrant_rules.is_data_error)
        for (session, _), exc in refused:
            quarantined.add(session, "point_refused", exc)
        written += len(batch) - len(refused)
    return written


def sync_sessions(
    db: Database,
    qc: QdrantClient,
    collection: str,
    dim: int,
    session_ids: list[str],
    quarantined: Quarantined | None = None,
    max_bytes: int = batching.QDRANT_REQUEST_BYTES,
) -> tuple[int, int]:
    """Upsert the points these sessions should have, delete the ones they should not (a quarantined
    session's included). Returns (upserted, deleted)."""
    quarantined = quarantined if quarantined is not None else Quarantined("vectors")
    upserted = deleted = 0
    for part in chunks(session_ids, 2000):
        found = {e["_id"]: e for e in find_in(db[EXAMPLES], "_id", part, _FIELDS)}
        erased = suppressed_users(db, (e.get("user_id") for e in found.values()))  # their points go
        found = {s: e for s, e in found.items() if e.get("user_id") not in erased}
        keep = _points([found[s] for s in part if s in found and wanted(found[s], dim)], quarantined)
        upserted += upsert(qc, collection, keep, quarantined, max_bytes)
        drop = [vectorstore.point_id(s) for s in part if s in quarantined or not (s in found and wanted(found[s], dim))]
        if drop:
            qc.delete(collection, points_selector=models.PointIdsList(points=list[models.ExtendedPointId](drop)), wait=True)
        deleted += len(drop)
    return upserted, deleted


def balance_synthetic(
    qc: QdrantClient,
    collection: str,
    threshold: int,
    seeding: vectorstore.Seeding | None,
    *,
    repair: bool = True,
    drift: Drift | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """(real, synthetic) points per category, after each category at the threshold lost its
    synthetic points and each category below it got them back (pipeline.md, Step 3 and "Derived
    stores agree with MongoDB"). `seeding`: how the collection was seeded (None: it never was, and
    nothing is restored). Without `repair` nothing is written and `drift` counts the categories."""
    real, synthetic = _counts(qc, collection, "real"), _counts(qc, collection, "synthetic")
    retiring = [c for c, n in real.items() if n >= threshold and synthetic[c]]
    restoring = [c for c, n in real.items() if n < threshold and not synthetic[c]] if seeding else []
    if drift is not None:
        drift.add("extra", retiring)
        drift.add("missing", restoring)
    if not repair:
        return real, synthetic
    for category in retiring:
        qc.delete(
            collection,
            points_selector=models.FilterSelector(filter=vectorstore.source_filter("synthetic", category)),
            wait=True,
        )
    if restoring and seeding:
        vectorstore.seed_categories(qc, collection, seeding, restoring)
        log.warning("synthetic points restored", extra={"fields": {"categories": restoring}})
    return real, _counts(qc, collection, "synthetic") if retiring or restoring else synthetic


def _counts(qc: QdrantClient, collection: str, source: str) -> dict[str, int]:
    return _every_category(vectorstore.counts_by_category(qc, collection, source))


def _every_category(counted: Mapping[Any, int]) -> dict[str, int]:
    return {c: counted.get(c, 0) for c in CATEGORIES}


REAL_STORE, SYNTHETIC_STORE = "qdrant_real", "qdrant_synthetic"  # names in `verify` and the agreement table
PAGE = 1000  # examples (and points) compared per page of a full run: the client's memory bound


def _same_point(stored: Any, point: models.PointStruct) -> bool:
    """The stored point has this point's payload and, within float32's precision, its vector."""
    if stored is None or stored.payload != point.payload:
        return False
    vector = stored.vector if isinstance(stored.vector, list) else None
    want = point.vector if isinstance(point.vector, list) else None
    if vector is None or want is None or len(vector) != len(want):
        return False
    return all(abs(a - b) <= 1e-6 for a, b in zip(vector, want, strict=True))


def reconcile(
    db: Database,
    qc: QdrantClient,
    collection: str,
    dim: int,
    *,
    repair: bool,
    quarantined: Quarantined | None = None,
    max_bytes: int = batching.QDRANT_REQUEST_BYTES,
) -> tuple[int, int, int, dict[str, Drift]]:
    """Every real point compared with the examples, a page at a time (pipeline.md, "Derived stores
    agree with MongoDB"): a high example with a v1 embedding has its point with the payload of
    Step 3 and its vector; no other point is `real`. With `repair` the differences are written
    (upserted, deleted), else only counted. Returns (kept, upserted, deleted, drift by store).

    Two streamed passes: the examples (each page's points read back by id), then the real points
    (each page's examples looked up by id): extra points whose example is gone."""
    quarantined = quarantined if quarantined is not None else Quarantined("vectors")
    drift = Drift(REAL_STORE)
    kept = upserted = deleted = 0
    for page in pages(db[EXAMPLES].find({}, _FIELDS, batch_size=PAGE), PAGE):
        erased = suppressed_users(db, (e.get("user_id") for e in page))  # an erased user's points go
        made = _points([e for e in page if wanted(e, dim) and e.get("user_id") not in erased], quarantined)
        ids = [vectorstore.point_id(e["_id"]) for e in page]
        stored = {str(p.id): p for p in qc.retrieve(collection, ids, with_payload=True, with_vectors=True)}
        stale = [(s, pt) for s, pt in made if not _same_point(stored.get(str(pt.id)), pt)]
        drift.add("missing", [s for s, pt in stale if str(pt.id) not in stored])
        drift.add("different", [s for s, pt in stale if str(pt.id) in stored])
        keep = {str(pt.id) for s, pt in made if s not in quarantined}
        unwanted = [(e["_id"], pid) for e, pid in zip(page, ids, strict=True) if pid in stored and pid not in keep]
        drift.add("extra", [s for s, _ in unwanted])
        if repair:
            upserted += upsert(qc, collection, stale, quarantined, max_bytes)
            _delete(qc, collection, [pid for s, pid in unwanted] + [str(pt.id) for s, pt in made if s in quarantined])
            deleted += len(unwanted)
        kept += sum(1 for s, _ in made if s not in quarantined)
    offset = None
    while True:
        found, offset = qc.scroll(
            collection,
            scroll_filter=vectorstore.source_filter("real"),
            limit=PAGE,
            offset=offset,
            with_payload=["example_id"],
            with_vectors=False,
        )
        claimed = {str(p.id): (p.payload or {}).get("example_id") for p in found}
        examples = {
            e["_id"] for e in find_in(db[EXAMPLES], "_id", [x for x in claimed.values() if isinstance(x, str)], {"_id": 1})
        }
        orphaned = [
            pid
            for pid, example in claimed.items()
            if not (isinstance(example, str) and example in examples and vectorstore.point_id(example) == pid)
        ]
        drift.add("extra", [claimed[pid] or pid for pid in orphaned])
        if repair:
            _delete(qc, collection, orphaned)
            deleted += len(orphaned)
        if offset is None:
            break
    return kept, upserted, deleted, {REAL_STORE: drift}


def _delete(qc: QdrantClient, collection: str, point_ids: list[str]) -> None:
    if point_ids:
        qc.delete(collection, points_selector=models.PointIdsList(points=list[models.ExtendedPointId](point_ids)), wait=True)


def run_vectors(
    db: Database,
    qc: QdrantClient,
    window: Window,
    *,
    collection: str,
    dim: int,
    threshold: int,
    full: bool = False,
    fence: Fence = NO_FENCE,
    seeding: vectorstore.Seeding | None = None,
    max_request_bytes: int = batching.QDRANT_REQUEST_BYTES,
) -> dict:
    """`fence`: the run's lease token; the quarantine's MongoDB writes go through it (Qdrant's are
    fenced by the client the runner hands over). `full`: every point compared with the examples and
    repaired (`reconcile`). `seeding`: how the synthetic points were seeded, to restore them in a
    category whose real points fell below `threshold` (None: never seeded). `max_request_bytes`:
    QDRANT_MAX_REQUEST_BYTES."""
    vectorstore.ensure_collection(qc, collection, dim)
    quarantined = Quarantined("vectors")
    drift: dict[str, Drift] = {}
    if full:
        sessions, upserted, deleted, drift = reconcile(
            db, qc, collection, dim, repair=True, quarantined=quarantined, max_bytes=max_request_bytes
        )
        settle(db, quarantined, None, fence=fence)
    else:
        touched = sorted(touched_sessions(db, window))
        upserted, deleted = sync_sessions(db, qc, collection, dim, touched, quarantined, max_request_bytes)
        sessions = len(touched)
        settle(db, quarantined, touched, fence=fence)
    synthetic_drift = drift.setdefault(SYNTHETIC_STORE, Drift(SYNTHETIC_STORE)) if full else None
    real, synthetic = balance_synthetic(qc, collection, threshold, seeding, drift=synthetic_drift)
    summary = {
        "window": str(window),
        "full": full,
        "sessions": sessions,
        "upserted": upserted,
        "deleted": deleted,
        "real_points": real,
        "synthetic_points": synthetic,
    }
    if quarantined:
        summary["quarantined"] = quarantined.counts()
    if drift:
        summary["drift"] = {k: d.as_dict() for k, d in drift.items()}
    log.info("vectors done", extra={"fields": summary})
    return summary
