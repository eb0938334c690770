"""Qdrant: the client from settings, the collection, deterministic point ids, synthetic seed points."""

from __future__ import annotations

import random
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qdrant_client import QdrantClient, models

from sentencify.schemas import CATEGORIES
from sentencify.settings import Settings

PAYLOAD_INDEXES = ("source", "category", "user_id")


def client(settings: Settings, wait_s: float = 300) -> QdrantClient:
    """A server when QDRANT_URL is set, else local mode in QDRANT_PATH.

    Local mode admits one process at a time (a file lock): wait up to `wait_s` for another
    holder (a vectors task of the hourly chain, say) to finish, then say who to look for.
    """
    if settings.qdrant_url:
        return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=60)
    assert settings.qdrant_path is not None, "QDRANT_PATH defaults to the stack's directory when QDRANT_URL is unset"
    Path(settings.qdrant_path).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return QdrantClient(path=settings.qdrant_path)
        except RuntimeError as exc:
            if "already accessed" not in str(exc) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{exc} Another process holds {settings.qdrant_path} (a running vectors step?); "
                    "wait for it, or set QDRANT_URL to use a Qdrant server"
                ) from None
            time.sleep(1)


def point_id(example_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sentencify:" + example_id))


def synthetic_id(category: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sentencify:synthetic:{category}:{n}"))


def ensure_collection(qc: QdrantClient, name: str, dim: int) -> None:
    if qc.collection_exists(name):
        vectors = qc.get_collection(name).config.params.vectors
        size = getattr(vectors, "size", None)
        if size is not None and size != dim:
            raise ValueError(
                f"Qdrant collection {name!r} has vectors of {size}, not EMBEDDING_DIM={dim}: "
                "use another QDRANT_COLLECTION or recreate it"
            )
    else:
        qc.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    with warnings.catch_warnings():  # local mode says payload indexes have no effect there; a server uses them
        warnings.simplefilter("ignore", UserWarning)
        for field in PAYLOAD_INDEXES:
            qc.create_payload_index(name, field_name=field, field_schema=models.PayloadSchemaType.KEYWORD)


def source_filter(source: str, category: str | None = None) -> models.Filter:
    must: list[models.Condition] = [models.FieldCondition(key="source", match=models.MatchValue(value=source))]
    if category is not None:
        must.append(models.FieldCondition(key="category", match=models.MatchValue(value=category)))
    return models.Filter(must=must)


def count(qc: QdrantClient, name: str, source: str, category: str | None = None) -> int:
    return qc.count(name, count_filter=source_filter(source, category), exact=True).count


def counts_by_category(qc: QdrantClient, name: str, source: str) -> dict[str, int]:
    """Points of one source per category in one facet call (not one count per category)."""
    hits = qc.facet(name, key="category", facet_filter=source_filter(source), limit=1000, exact=True).hits
    return {str(h.value): h.count for h in hits}


@dataclass(frozen=True)
class Seeding:
    """How a collection's synthetic points were made (`seed_synthetic`): enough to make a
    category's points again, the same ids and vectors, when its real points fall below the threshold."""

    per_category: int
    seed: int = 42

    KEY = "sentencify_synthetic"  # in the collection's metadata, and MongoDB's copy in `store_markers`

    def as_metadata(self) -> dict:
        return {self.KEY: {"per_category": self.per_category, "seed": self.seed}}

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> Seeding | None:
        found = (metadata or {}).get(cls.KEY)
        return cls(int(found["per_category"]), int(found["seed"])) if isinstance(found, dict) else None


def seeding_of(qc: QdrantClient, name: str) -> Seeding | None:
    """The collection's own record of its seeding (None: never seeded, or the collection is gone)."""
    if not qc.collection_exists(name):
        return None
    return Seeding.from_metadata(qc.get_collection(name).config.metadata)


def seed_categories(qc: QdrantClient, name: str, seeding: Seeding, categories: list[str], dim: int | None = None) -> int:
    """`seeding.per_category` synthetic points in each of `categories` (deterministic ids and
    vectors per category: seeding one category again gives the same points). Returns how many."""
    from sentencify.simulate import category_centers

    size = dim or getattr(qc.get_collection(name).config.params.vectors, "size", None)
    centers = category_centers(seeding.seed, int(size or 0))
    now = int(datetime.now(UTC).timestamp())
    written = 0
    for category in categories:
        rng = random.Random(f"synthetic:{seeding.seed}:{category}")
        center = centers[category]
        points = [
            models.PointStruct(
                id=synthetic_id(category, n),
                vector=[c + rng.gauss(0, 0.35 / len(center) ** 0.5) for c in center],
                payload={"source": "synthetic", "category": category, "example_id": None, "created_at": now},
            )
            for n in range(seeding.per_category)
        ]
        qc.upsert(name, points=points, wait=True)
        written += len(points)
    qc.update_collection(name, metadata=seeding.as_metadata())
    return written


def seed_synthetic(qc: QdrantClient, settings: Settings, per_category: int, threshold: int, seed: int = 42) -> dict[str, int]:
    """Synthetic points around each category's centre; deterministic ids, so re-seeding changes nothing.

    A category whose real points already reached the threshold is not seeded. The collection keeps
    how it was seeded (`Seeding`), so the vectors step can restore a category's points later."""
    ensure_collection(qc, settings.qdrant_collection, settings.embedding_dim)
    seeding = Seeding(per_category, seed)
    real = counts_by_category(qc, settings.qdrant_collection, "real")
    seeded = {}
    for category in CATEGORIES:
        due = real.get(category, 0) < threshold
        seeded[category] = (
            seed_categories(qc, settings.qdrant_collection, seeding, [category], settings.embedding_dim) if due else 0
        )
    qc.update_collection(settings.qdrant_collection, metadata=seeding.as_metadata())
    return seeded
