"""`sentencify verify`: every derived store compared with what MongoDB's raw records imply.

pipeline.md, "Derived stores agree with MongoDB". Per step, in chain order, its stores are checked
page by page (the steps' own `reconcile` functions with `repair=False`: the same comparison a full
run makes, nothing written): `training_examples` and `etl_rejects` (ETL), `user_profile` and
`redis_profiles` (profile), `qdrant_real` and `qdrant_synthetic` (vectors), `fact_hours`,
`fact_examples`, `fact_sessions` and `fact_users` (views). With `repair`, a step whose stores
differ runs in full under its lease (`runner.run_step`, fenced like any run: the repair writes
only what differs, and asks the steps after it to follow when it changed their input), then its
stores are checked again. Every check is recorded in MongoDB's `store_checks` (per store: the
counts, a few ids, when it was checked and when it last agreed), which the views step exports to
the dashboard's store-agreement table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import UpdateOne
from pymongo.database import Database

from sentencify import mongo
from sentencify.settings import Settings
from sentencify.steps.census import CHECKS
from sentencify.steps.drift import Drift
from sentencify.steps.runner import STEPS, Stores, run_step

log = logging.getLogger("sentencify.verify")


@dataclass
class StepCheck:
    """One step's stores: as found, and (after a repair) as left."""

    step: str
    found: list[Drift]
    after: list[Drift] | None = None  # None: not repaired (it agreed, or no repair was asked)
    repair_summary: dict | None = None

    @property
    def final(self) -> list[Drift]:
        return self.after if self.after is not None else self.found

    @property
    def agrees(self) -> bool:
        return all(d.agrees for d in self.final)


def check_step(step: str, db: Database, settings: Settings, stores: Stores) -> list[Drift]:
    """The drift of each store `step` writes (nothing written). Raises what a store raises."""
    if step == "etl":
        from sentencify.steps import etl
        from sentencify.steps.examples import Rules

        rules = Rules(time_gap=timedelta(seconds=settings.etl_time_gap_s))
        return list(etl.reconcile(db, rules, repair=False).drift.values())
    if step == "profile":
        from sentencify.steps import profiles

        r = stores.redis()
        try:
            return list(profiles.reconcile(db, r, repair=False).drift.values())
        finally:
            r.close()
    if step == "vectors":
        from sentencify import vectorstore
        from sentencify.steps import vectors

        qc = stores.qdrant()
        try:
            name = settings.qdrant_collection
            if not qc.collection_exists(name):
                vectorstore.ensure_collection(qc, name, settings.embedding_dim)  # empty: every point missing
            _, _, _, drift = vectors.reconcile(db, qc, name, settings.embedding_dim, repair=False)
            synthetic = Drift(vectors.SYNTHETIC_STORE)
            seeding = vectorstore.seeding_of(qc, name) or _seeding(db)
            vectors.balance_synthetic(qc, name, settings.vector_real_threshold, seeding, repair=False, drift=synthetic)
            return [*drift.values(), synthetic]
        finally:
            qc.close()
    if step == "views":
        from sentencify.steps import views

        conn = stores.analytics()
        try:
            with views.transaction(conn):
                views.apply_sql(conn)
            return list(views.reconcile(db, conn, repair=False).values())
        finally:
            conn.close()
    raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")


def _seeding(db: Database):
    from sentencify import vectorstore
    from sentencify.steps.census import MARKERS

    doc = db[MARKERS].find_one({"_id": "synthetic_seed"})
    return vectorstore.Seeding.from_metadata(doc) if doc else None


def verify(
    settings: Settings,
    *,
    steps: tuple[str, ...] = STEPS,
    repair: bool = False,
    db: Database | None = None,
    stores: Stores | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> list[StepCheck]:
    """Check (and with `repair`, repair) the stores of `steps`, in chain order; `echo` gets a line
    of progress per step. `db`/`stores`: clients of the caller's (the Airflow operator's hooks);
    by default made from the settings. Raises ValueError for an unknown step and what a store raises."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step {unknown[0]!r}; choose from {', '.join(STEPS)}")
    stores = stores or Stores.from_settings(settings)
    client = mongo.client(settings.mongo_uri, app_name="sentencify-verify") if db is None else None
    if client is not None:
        db = client[settings.mongo_db]
    assert db is not None
    results: list[StepCheck] = []
    try:
        for n, step in enumerate(s for s in STEPS if s in steps):
            echo(f"[{n + 1}/{len(steps)}] {step}: checking ...")
            checked = StepCheck(step, check_step(step, db, settings, stores))
            if repair and not checked.agrees:
                echo(f"[{n + 1}/{len(steps)}] {step}: differs; repairing (a full run of the step) ...")
                checked.repair_summary = run_step(step, None, settings, full=True, db=db, stores=stores)
                checked.after = check_step(step, db, settings, stores)
            record(db, checked)
            results.append(checked)
    finally:
        if client is not None:
            client.close()
    return results


def record(db: Database, checked: StepCheck, now: datetime | None = None) -> None:
    """`store_checks`: per store, what the last check found (and left), and when it last agreed."""
    now = now or datetime.now(UTC)
    after = {d.store: d for d in checked.after or []}
    ops = []
    for found in checked.found:
        left = after.get(found.store, found)
        doc = {
            "step": checked.step,
            "found": found.as_dict(samples=False),  # counts only: ids can name a person
            "repaired": checked.after is not None,
            "agrees": left.agrees,
            "checked_at": now,
        }
        update: dict = {"$set": doc}
        if left.agrees:
            update["$set"]["agreed_at"] = now
        ops.append(UpdateOne({"_id": found.store}, update, upsert=True))
    if ops:
        db[CHECKS].bulk_write(ops)
