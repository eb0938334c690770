"""Step 3: vector migration: high-consistency examples -> Qdrant real points; synthetic points retire per category.

After a run, for every session the window touched, its point exists exactly when its example is
`high` with a v1 embedding, with the payload of pipeline.md. `full=True` reconciles every example.
The vector is the embedding made storable by `stores.qdrant.unit_vector`; an embedding that has
no direction (a NaN or an infinity) or a point Qdrant refuses quarantines its session
(sentencify.steps.quarantine) and the session has no point; the rest is published.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database
from qdrant_client import QdrantClient, models

from sentencify import vectorstore
from sentencify.erasure.suppression import suppressed_users
from sentencify.mongo import find_in
from sentencify.schemas import CATEGORIES
from sentencify.steps.etl import EXAMPLES
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import chunks, touched_sessions
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


class NotStorable(ValueError):
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


def upsert(qc: QdrantClient, collection: str, points: list[tuple[str, models.PointStruct]], quarantined: Quarantined) -> int:
    """Upsert in batches; a point Qdrant refuses is found by bisection and its session quarantined.
    Returns the number of points written."""
    written = 0
    for i in range(0, len(points), UPSERT_BATCH):
        batch = points[i : i + UPSERT_BATCH]

        def write(items: list[tuple[str, models.PointStruct]]) -> None:
            qc.upsert(collection, points=[p for _, p in items], wait=True)

        refused = bisect(batch, write, qdrant_rules.is_data_error)
        for (session, _), exc in refused:
            quarantined.add(session, "point_refused", exc)
        written += len(batch) - len(refused)
    return written


def sync_sessions(
    db: Database, qc: QdrantClient, collection: str, dim: int, session_ids: list[str], quarantined: Quarantined | None = None
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
        upserted += upsert(qc, collection, keep, quarantined)
        drop = [vectorstore.point_id(s) for s in part if s in quarantined or not (s in found and wanted(found[s], dim))]
        if drop:
            qc.delete(collection, points_selector=models.PointIdsList(points=list[models.ExtendedPointId](drop)), wait=True)
        deleted += len(drop)
    return upserted, deleted


def retire_synthetic(
    qc: QdrantClient, collection: str, threshold: int, known: tuple[dict[str, int], dict[str, int]] | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """(real, synthetic) points per category, after a category at the threshold lost its synthetic points.

    `known`: those counts, when the caller already has them (each count reads the whole collection
    in local mode). A delete by filter does too, so only categories that still have synthetic points
    are asked to lose them."""
    real, synthetic = known or (_counts(qc, collection, "real"), _counts(qc, collection, "synthetic"))
    retiring = [c for c, n in real.items() if n >= threshold and synthetic[c]]
    for category in retiring:
        qc.delete(
            collection,
            points_selector=models.FilterSelector(filter=vectorstore.source_filter("synthetic", category)),
            wait=True,
        )
    return real, _counts(qc, collection, "synthetic") if retiring else synthetic


def _counts(qc: QdrantClient, collection: str, source: str) -> dict[str, int]:
    return _every_category(vectorstore.counts_by_category(qc, collection, source))


def _every_category(counted: Mapping[Any, int]) -> dict[str, int]:
    return {c: counted.get(c, 0) for c in CATEGORIES}


def real_point_ids(qc: QdrantClient, collection: str) -> set[str]:
    ids: set[str] = set()
    offset = None
    while True:
        # Large pages: local mode evaluates the filter over the whole collection once per page.
        points, offset = qc.scroll(
            collection,
            scroll_filter=vectorstore.source_filter("real"),
            limit=10_000,
            offset=offset,
            with_payload=False,
            with_vectors=False,
        )
        ids.update(str(p.id) for p in points)
        if offset is None:
            return ids


def _point_batches(db: Database, dim: int, out: queue.Queue, keep: dict[str, str | None], quarantined: Quarantined) -> None:
    """Reader thread: MongoDB scan -> batches of (session, point), so reading overlaps the upserts.

    Whole documents: a server-side projection cost the local server more than sending the rest."""
    batch: list[tuple[str, models.PointStruct]] = []
    try:
        for example in db[EXAMPLES].find({}, batch_size=UPSERT_BATCH):  # one reply, one upsert
            if wanted(example, dim):
                made = _points([example], quarantined)
                if not made:
                    continue
                batch += made
                keep[str(made[0][1].id)] = example.get("final_category")  # its payload's category
                if len(batch) == UPSERT_BATCH:
                    out.put(batch)
                    batch = []
        if batch:
            out.put(batch)
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 (handed to the upserting thread, which re-raises it)
        out.put(exc)


@dataclass
class FullSync:
    kept: int  # examples that have a point
    upserted: int
    deleted: int
    counts: tuple[dict[str, int], dict[str, int]]  # (real, synthetic) points per category afterwards


def sync_all(db: Database, qc: QdrantClient, collection: str, dim: int, quarantined: Quarantined | None = None) -> FullSync:
    """Every example in one scan, upserted in batches as it streams; then stale real points deleted.

    Only this run writes the collection (the step's lease), so the real points afterwards are
    exactly the kept ones, and the synthetic ones are those before."""
    quarantined = quarantined if quarantined is not None else Quarantined("vectors")
    batches: queue.Queue = queue.Queue(maxsize=4)  # bounded: memory stays flat on any collection size
    keep: dict[str, str | None] = {}  # point id -> category
    reader = threading.Thread(target=_point_batches, args=(db, dim, batches, keep, quarantined), daemon=True)
    reader.start()
    # While MongoDB prepares the first batch:
    before = real_point_ids(qc, collection)
    synthetic = _counts(qc, collection, "synthetic")
    upserted = 0
    while (batch := batches.get()) is not None:
        if isinstance(batch, BaseException):
            raise batch
        before_batch = len(quarantined)
        upserted += upsert(qc, collection, batch, quarantined)
        if len(quarantined) > before_batch:  # refused points are not kept: deleted below if they existed
            for session, pt in batch:
                if session in quarantined:
                    keep.pop(str(pt.id), None)
    reader.join()
    stale = sorted(before - keep.keys())
    if stale:
        qc.delete(collection, points_selector=models.PointIdsList(points=list[models.ExtendedPointId](stale)), wait=True)
    return FullSync(len(keep), upserted, len(stale), (_every_category(Counter(keep.values())), synthetic))


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
) -> dict:
    """`fence`: the run's lease token; the quarantine's MongoDB writes go through it (Qdrant's are
    fenced by the client the runner hands over)."""
    vectorstore.ensure_collection(qc, collection, dim)
    known = None
    quarantined = Quarantined("vectors")
    if full:
        synced = sync_all(db, qc, collection, dim, quarantined)
        sessions, upserted, deleted, known = synced.kept, synced.upserted, synced.deleted, synced.counts
        settle(db, quarantined, None, fence=fence)
    else:
        touched = sorted(touched_sessions(db, window))
        upserted, deleted = sync_sessions(db, qc, collection, dim, touched, quarantined)
        sessions = len(touched)
        settle(db, quarantined, touched, fence=fence)
    real, synthetic = retire_synthetic(qc, collection, threshold, known)
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
    log.info("vectors done", extra={"fields": summary})
    return summary
