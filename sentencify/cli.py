"""`sentencify ...`: the command line of the platform (interfaces.md, 'Command line')."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka.errors import NoBrokersAvailable

from sentencify.errors import SentencifyError, store_errors
from sentencify.settings import Settings, SettingsError


def _iso(text: str) -> datetime:
    from sentencify.schemas import to_utc_datetime

    try:
        return to_utc_datetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify import stack

    args.only = args.only or args.only_opt or None
    if args.action == "logs":
        return _stack_logs(args, settings)
    if args.secure:  # its own directory, ports and settings (sentencify.stack.secure)
        from sentencify.stack.secure import secure_settings

        settings = secure_settings(Path(f"{settings.stack_dir}-secure"))
    if args.action == "up":
        print(f"starting the local stack in {settings.stack_dir}")
        stack.up(settings, only=args.only)
    elif args.action == "down":
        stack.down(settings, only=args.only)
        return 0
    rows = stack.status(settings, only=args.only)
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "services": [
                        {
                            "name": r.name,
                            "port": r.port,
                            "pid": r.pid,
                            "running": r.running,
                            "healthy": r.healthy,
                            "log": r.log_file,
                        }
                        for r in rows
                    ],
                    "settings": {
                        var: settings.shown(name)
                        for var, name in (
                            ("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
                            ("MONGO_URI", "mongo_uri"),
                            ("MONGO_DB", "mongo_db"),
                            ("REDIS_URL", "redis_url"),
                            ("ANALYTICS_DB_URI", "analytics_db_uri"),
                        )
                    },
                },
                indent=2,
            )
        )
        return 0 if all(r.healthy for r in rows) else 1
    print(f"{'service':<23}{'port':>7}  {'pid':>8}  {'health':<9} log")
    for r in rows:
        health = "healthy" if r.healthy else ("running" if r.running else "down")
        print(f"{r.name:<23}{r.port:>7}  {r.pid or '-':>8}  {health:<9} {r.log_file}")
    print()
    print(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}")
    print(f"MONGO_URI={settings.shown('mongo_uri')}  MONGO_DB={settings.mongo_db}")
    print(f"REDIS_URL={settings.shown('redis_url')}")
    print(f"ANALYTICS_DB_URI={settings.shown('analytics_db_uri')}")
    if args.secure:
        print(f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}  KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}")
        print(f"KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile}  KAFKA_SSL_KEYFILE={settings.kafka_ssl_keyfile}")
        print(f"every setting, passwords included (mode 600): set -a; . {settings.stack_dir / 'secure.env'}; set +a")
    if any(r.name.startswith("airflow") and r.running for r in rows):
        from sentencify.stack.airflow import ADMIN_USER, admin_password, admin_password_file

        admin_password(settings)  # created on first use
        print(
            f"Airflow UI: http://127.0.0.1:{settings.airflow_port}  login {ADMIN_USER}, "
            f"password in {admin_password_file(settings)}"
        )
    if any(r.name == "superset" and r.running for r in rows):
        from sentencify.stack import superset

        where = "SUPERSET_PASSWORD" if settings.superset_password else f"password in {superset.admin_password_file(settings)}"
        print(f"Superset:   http://127.0.0.1:{settings.superset_port}  login {settings.superset_username}, {where}")
    return 0 if all(r.healthy for r in rows) else 1


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify.produce import produce
    from sentencify.simulate import generate

    if args.once and _already_ingested(settings, args.seed, args.sessions):
        print(
            f"already in MongoDB: the {args.sessions} sessions of seed {args.seed}; nothing produced "
            "(--once; another --seed simulates other sessions)"
        )
        return 0
    start = args.start or (datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours))
    records = list(
        generate(
            args.sessions,
            seed=args.seed,
            anomalies=args.anomalies,
            start=start,
            hours=args.hours,
            embedding_dim=settings.embedding_dim,
        )
    )
    manifest = produce(settings, records, total=len(records))
    print(f"produced {manifest.records} records for {args.sessions} sessions from {start.isoformat()} over {args.hours}h")
    for collection, count in manifest.stored_counts().items():
        print(f"  {collection:<30} {count:>8} distinct keys")
    if manifest.dead_letters:
        print(f"  {'(malformed, for dead_letters)':<30} {sum(manifest.dead_letters.values()):>8}  {dict(manifest.dead_letters)}")
    return 0


def _already_ingested(settings: Settings, seed: int, sessions: int) -> bool:
    import re

    from sentencify import mongo
    from sentencify.simulate import population

    client = mongo.client(settings.mongo_uri)
    try:
        prefix = f"^sess_{re.escape(population(seed, sessions))}_"
        return (
            client[settings.mongo_db].editor_recommend_options.find_one({"recommend_session_id": {"$regex": prefix}}) is not None
        )
    finally:
        client.close()


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.__main__ import run

    return run(args)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from sentencify.steps.runner import run_step
    from sentencify.window import Window

    try:
        window = Window.parse(args.start, args.end)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hours = window.hours() if args.hourly else [window]
    for n, hour in enumerate(hours, 1):
        summary = run_step(args.step, hour, settings, full=args.full)
        prefix = f"[{n}/{len(hours)}] " if len(hours) > 1 else ""
        print(prefix + json.dumps(summary, default=str))
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Full rebuild of a step and of every step after it, in chain order (pipeline.md: after a rule
    or threshold change, so MongoDB, Redis, Qdrant and the views agree with the rebuilt examples)."""
    import json
    import time

    from sentencify import mongo
    from sentencify.steps.progress import PROGRESS, request_full_ops
    from sentencify.steps.runner import STEPS, run_step

    steps = STEPS[STEPS.index(args.from_step) :]
    client = mongo.client(settings.mongo_uri)
    try:  # recorded first: a rebuild cut short is finished by each step's next run, in or out of Airflow
        client[settings.mongo_db][PROGRESS].bulk_write(request_full_ops(steps))
    finally:
        client.close()
    for n, step in enumerate(steps, 1):
        print(f"[{n}/{len(steps)}] {step}: full rebuild ...", flush=True)
        began = time.monotonic()
        summary = run_step(step, None, settings, full=True)
        took = time.monotonic() - began
        print(f"[{n}/{len(steps)}] {step}: done in {took:.1f} s {json.dumps(summary, default=str)}", flush=True)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 only when every store agrees (after `--repair`: when the repair left them agreeing)."""
    import json

    from sentencify.steps.runner import STEPS
    from sentencify.verify import verify

    steps = (args.step,) if args.step else STEPS
    echo = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    results = verify(settings, steps=steps, repair=args.repair, echo=echo)
    agree = all(r.agrees for r in results)
    if args.json:
        stores = []
        for r in results:
            after = {d.store: d for d in r.after or []}
            for d in r.found:
                entry = {"step": r.step, **d.as_dict()}
                if r.after is not None:
                    entry["after_repair"] = after[d.store].as_dict() if d.store in after else None
                stores.append(entry)
        print(json.dumps({"agree": agree, "repaired": args.repair, "stores": stores}, default=str))
        return 0 if agree else 1
    for r in results:
        after = {d.store: d for d in r.after or []}
        for d in r.found:
            print(d.line() + (f"  -> repaired: {after[d.store].line()}" if d.store in after and not d.agrees else ""))
    if agree:
        print("every store agrees with MongoDB" + (" (after the repair)" if any(r.after for r in results) else ""))
        return 0
    print(
        "some stores differ from MongoDB: "
        + ("the repair did not make them agree; see the log" if args.repair else "run `sentencify verify --repair`")
    )
    return 1


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify import mongo, vectorstore
    from sentencify.steps.census import MARKERS

    qc = vectorstore.client(settings)
    try:
        seeded = vectorstore.seed_synthetic(qc, settings, args.per_category, settings.vector_real_threshold, seed=args.seed)
    finally:
        qc.close()
    client = mongo.client(settings.mongo_uri)
    try:  # MongoDB's copy: a collection dropped and re-created gets its synthetic points back from it
        seeding = vectorstore.Seeding(args.per_category, args.seed).as_metadata()
        client[settings.mongo_db][MARKERS].replace_one(
            {"_id": "synthetic_seed"}, {"_id": "synthetic_seed", **seeding}, upsert=True
        )
    finally:
        client.close()
    print(f"synthetic points in {settings.qdrant_collection}: {seeded}")
    return 0


def _stack_logs(args: argparse.Namespace, settings: Settings) -> int:
    """`stack logs SERVICE [-f] [-n N]`: the end of a service's log, like `tail`."""
    import time

    from sentencify import stack

    by_name = {s.name: s for s in stack.services(settings)}
    if not args.only or len(args.only) != 1 or args.only[0] not in by_name:
        example = "`sentencify stack logs airflow-scheduler -f`"
        print(f"error: name one service: {' '.join(by_name)}  (e.g. {example})", file=sys.stderr)
        return 2
    service = by_name[args.only[0]]
    path = Path(service.log_file)
    if not path.exists():
        print(f"error: {service.name} has no log yet ({path}); start it with `sentencify stack up`", file=sys.stderr)
        return 2
    from sentencify.redact import redact_text

    with path.open(errors="replace") as f:
        lines = f.readlines()
        for line in lines[len(lines) - args.lines :] if args.lines > 0 else []:
            print(redact_text(line), end="")
        while args.follow:
            line = f.readline()
            if line:
                print(redact_text(line), end="", flush=True)
            else:
                time.sleep(0.3)
    return 0


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify import summary

    sections = summary.collect(settings)
    if args.json:
        import json

        print(
            json.dumps(
                {title: {str(label).strip(): value for label, value in rows} for title, rows in sections}, indent=2, default=str
            )
        )
        return 0
    print(summary.render(sections))
    return 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify.dashboard.bundle import BundleError, build
    from sentencify.dashboard.deploy import DeployError, deploy, superset_password

    try:
        if args.action == "build":
            bundle = build(settings)
            out = args.out or Path("build/sentencify_dashboard.zip")
            out.parent.mkdir(parents=True, exist_ok=True)
            data = bundle.zip_bytes("dashboard", with_passwords=args.with_password)
            if args.with_password:  # a secret: readable by its owner only, from the first byte
                out.unlink(missing_ok=True)
                out.touch(mode=0o600)
            out.write_bytes(data)
            print(
                f"{out}: {len(bundle.charts)} charts, {len(bundle.datasets)} datasets "
                f"(import offline with `superset import-dashboards -p {out} -u admin`)"
            )
            if bundle.passwords and not args.with_password:
                print(
                    "note: the database password is masked in this zip: `superset import-dashboards` keeps the "
                    "password of a database Superset already has; for a first import build with --with-password "
                    "(the zip then holds the password: keep it private) or use `sentencify dashboard deploy`"
                )
            elif args.with_password:
                print("note: the zip holds the database password (mode 600): keep it private, delete it after the import")
            return 0
        if args.action == "deploy":
            print(f"deploying the dashboard to {settings.superset_url}")
            deployed = deploy(settings)
            print(f"dashboard: {deployed.url}  ({deployed.charts} charts)")
            return 0
        from sentencify.dashboard.screenshot import screenshot

        shot = screenshot(
            settings.superset_url,
            settings.superset_username,
            superset_password(settings),
            args.out or Path("build/dashboard.png"),
        )
        print(
            f"{shot.path}: {shot.drawn}/{shot.charts} charts drawn"
            + (f", with no data: {shot.empty}" if shot.empty else "")
            + (f", errors: {shot.errors}" if shot.errors else "")
        )
        return 0 if shot.drawn == shot.charts and not shot.errors else 1
    except (BundleError, DeployError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify import mongo
    from sentencify.erasure.keys import erasure_key_or_none
    from sentencify.erasure.suppression import SuppressionList
    from sentencify.produce import producer
    from sentencify.replay import Rules, replay_dead_letters
    from sentencify.schemas import topics

    known = set(topics(settings.topic_prefix))
    if args.to_topic and args.to_topic not in known:
        print(
            f"error: --to-topic {args.to_topic!r} is not one of the log topics under {settings.topic_prefix!r}", file=sys.stderr
        )
        return 2
    client = mongo.client(settings.mongo_uri)
    kafka = None if args.dry_run else producer(settings)
    try:
        done = replay_dead_letters(
            client[settings.mongo_db],
            kafka,
            known_topics=known,
            reason=args.reason,
            topic=args.topic,
            to_topic=args.to_topic,
            dry_run=args.dry_run,
            rules=Rules(settings.topic_prefix, settings.embedding_dim, settings.max_record_bytes),
            skip_failing=args.only_storable,
            suppressed=SuppressionList(client[settings.mongo_db], erasure_key_or_none(settings)),
        )
    finally:
        if kafka is not None:
            kafka.close()
        client.close()
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {done.sent} dead letters {done.by_topic or ''}; left alone: {done.truncated} oversized "
        f"(only a prefix kept), {done.unknown_topic} of topics that are not log topics"
        + (f", {done.suppressed} of erased users (suppressed)" if done.suppressed else "")
    )
    if done.fail_again:
        what = "not sent (--only-storable)" if args.only_storable else "sent anyway (--only-storable skips them)"
        print(
            f"{sum(done.fail_again.values())} would fail again under today's rules {done.fail_again}, {what}; "
            "replay cannot repair bytes: after a producer bug, the fixed producer must send those records again"
        )
    if done.sent and not args.dry_run:
        print("the consumer stores them once it reads them (`sentencify consume`); any that fail again become new dead letters")
    return 0


def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    """List, or acknowledge, the ranges of records that left Kafka before the consumer read them (events.md)."""
    from datetime import UTC, datetime

    from sentencify import gaps, mongo

    client = mongo.client(settings.mongo_uri)
    try:
        db = client[settings.mongo_db]
        if args.action == "ack":
            done = gaps.acknowledge(db, datetime.now(UTC), ids=args.id or (), topic=args.topic)
            left = len(gaps.unacknowledged(db))
            print(f"acknowledged {done} ingestion gap(s); {left} still unacknowledged")
            return 0
        rows = gaps.listing(db, include_acknowledged=not args.open)
    finally:
        client.close()
    if args.json:
        import json

        print(json.dumps([{("id" if k == "_id" else k): v for k, v in r.items()} for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print("no ingestion gaps: every record the consumer should have read was still in Kafka when it read it")
        return 0
    print(gaps.render(rows))
    open_gaps = [r for r in rows if not r["acknowledged"]]
    if open_gaps:
        print(
            f"{len(open_gaps)} unacknowledged: those records are not in MongoDB and Kafka no longer has them; ask their "
            "producer to send them again if it can, then `sentencify gaps ack` (replaying dead letters cannot help)"
        )
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase users everywhere and suppress their later records (pipeline.md, "Personal data")."""
    import time

    from sentencify.erasure.forget import forget_users
    from sentencify.erasure.keys import erasure_key

    erasure_key(settings)  # a missing key is one line, before anything starts
    began = time.monotonic()
    users = list(dict.fromkeys(args.user))
    print(f"erasing {len(users)} user(s); each is shown by the start of its hash, never by its id", flush=True)

    def progress(who: str, store: str, n: int) -> None:
        print(f"  {who}  {store:<34} {n:>9} removed", flush=True)

    erased = forget_users(settings, users, progress=progress)
    for e in erased:
        total = sum(e.removed.values())
        print(
            f"done {e.user_hash[:12]}: {total} documents removed in {len(e.removed)} stores; {e.hours} ingestion hours recomputed"
        )
    print(
        f"erased {len(erased)} user(s) in {time.monotonic() - began:.1f} s; their later records are suppressed. "
        "Kafka keeps their records until the topics' retention removes them (docs/operations.md, 'Erasing a user')"
    )
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from sentencify.schemas.export import export_json_schemas

    for path in export_json_schemas(args.out):
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (`sentencify run: error: ...`), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sentencify", description="Sentencify Phase 2 data platform.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stack", help="the local services: up, down, status, logs SERVICE [-f]")
    p.add_argument("action", choices=("up", "down", "status", "logs"))
    p.add_argument("only", nargs="*", metavar="SERVICE", help="only these services (logs: exactly one)")
    p.add_argument("--only", dest="only_opt", nargs="+", metavar="SERVICE", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("-f", "--follow", action="store_true", help="logs: keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=50, help="logs: how many lines to show first (default 50)")
    p.add_argument("--json", action="store_true", help="status: machine-readable (passwords never shown)")
    p.add_argument("--secure", action="store_true", help="the stack with TLS and a login on every data service")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("simulate", help="produce realistic traffic to Kafka")
    p.add_argument("--sessions", type=int, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=42, metavar="S")
    p.add_argument("--anomalies", type=_rate, default=0.05, metavar="RATE", help="share of sessions with an anomaly (0..1)")
    p.add_argument("--hours", type=float, default=1.0, help="spread the sessions' timestamps over this many hours")
    p.add_argument("--start", type=_iso, help="first timestamp (ISO-8601; default: the last full --hours)")
    p.add_argument(
        "--once",
        action="store_true",
        help="produce nothing when these sessions (same --seed and --sessions) are already in MongoDB",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("consume", help="run the ingestion service (also `python -m consumer`)")
    from consumer.__main__ import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_consume)

    from sentencify.steps.runner import REGISTRY

    p = sub.add_parser(
        "run",
        help="one step of the chain for one window, outside Airflow",
        epilog="; ".join(f"{s.name}: {s.help}" for s in REGISTRY.values()),
    )
    p.add_argument("step", choices=tuple(REGISTRY))
    p.add_argument("--start", required=True, type=_iso, help="window start, ISO-8601 (no offset means UTC)")
    p.add_argument("--end", required=True, type=_iso, help="window end (exclusive)")
    p.add_argument("--hourly", action="store_true", help="run each hour of [start, end) in turn (a backfill)")
    p.add_argument(
        "--full",
        action="store_true",
        help="rebuild everything, not just the window: etl rebuilds every session, vectors reconciles every example",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "rebuild",
        help="full rebuild of a step and every step after it (after a rule or threshold change), with progress",
        epilog="In Airflow: trigger the step's DAG with param full=true; the assets carry the rebuild down the chain.",
    )
    p.add_argument("--from", dest="from_step", choices=tuple(REGISTRY), default="etl", help="first step to rebuild (default etl)")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser(
        "verify",
        help="compare every derived store with what MongoDB's raw records imply; --repair rewrites what differs",
        epilog="Exit status 0 only when every store agrees. In Airflow: the daily DAG sentencify_verify (with --repair).",
    )
    p.add_argument("--step", choices=tuple(REGISTRY), help="only the stores of this step")
    p.add_argument("--repair", action="store_true", help="rewrite what differs (a full run of each step that differs)")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("seed-synthetic", help="create the vector collection with synthetic points per category")
    p.add_argument("--per-category", type=int, default=50, metavar="N")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("summary", help="what is stored: records, dead letters, examples, profiles, vectors, view rows")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("dashboard", help="the Superset dashboard: deploy it, build its bundle, or screenshot it")
    p.add_argument("action", choices=("deploy", "build", "screenshot"))
    p.add_argument(
        "--out",
        type=Path,
        help="build: the zip (default build/sentencify_dashboard.zip); screenshot: the PNG (default build/dashboard.png)",
    )
    p.add_argument(
        "--with-password",
        action="store_true",
        help="build: put the database password in the zip, for a first offline `superset import-dashboards` (a secret)",
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("replay-dead-letters", help="send dead-lettered records through Kafka again (after a fix)")
    p.add_argument("--reason", help="only this reason (see `sentencify summary`), e.g. schema")
    p.add_argument("--topic", help="only records that came from this topic")
    p.add_argument("--to-topic", help="send them here instead of their original topic (e.g. a renamed topic)")
    p.add_argument("--dry-run", action="store_true", help="count what would be replayed, send nothing")
    p.add_argument(
        "--only-storable",
        action="store_true",
        help="send only letters today's rules would store (skip those that would fail again)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("gaps", help="list, or acknowledge (`gaps ack`), records that left Kafka before the consumer read them")
    p.add_argument("action", nargs="?", choices=("list", "ack"), default="list")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    p.add_argument("--open", action="store_true", help="list: only the unacknowledged gaps")
    p.add_argument("--id", action="append", metavar="ID", help="ack: only this gap (repeatable; default: all unacknowledged)")
    p.add_argument("--topic", help="ack: only the gaps of this topic")
    p.set_defaults(func=cmd_gaps)
    p = sub.add_parser("forget", help="erase users from every store and suppress their later records")
    p.add_argument("--user", action="append", required=True, metavar="USER_ID", help="a user id (repeat for several)")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("schemas", help="write the JSON Schema of every log type (for producers)")
    p.add_argument("--out", default="docs/schemas")
    p.set_defaults(func=cmd_schemas)
    return parser


def explain(exc: BaseException, settings: Settings | None) -> str:
    """One line in words for an error: what failed, and what to do.

    Recognised by class: the project's own (`sentencify.errors.SentencifyError`, which say it
    themselves), then the base exception of each store's client library."""
    from sentencify.redact import redact_text

    name = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, SettingsError):
        return str(exc)
    from sentencify.kafka_config import explain_connection_error

    if refused := explain_connection_error(exc, settings):  # TLS trust and logins (the secured stack)
        return redact_text(refused)
    if isinstance(exc, NoBrokersAvailable):
        where = settings.kafka_bootstrap_servers if settings else "KAFKA_BOOTSTRAP_SERVERS"
        return f"no Kafka broker at {where}: start it with `sentencify stack up` or fix KAFKA_BOOTSTRAP_SERVERS"
    drivers = store_errors()
    if isinstance(exc, drivers.get("mongo", ())):
        first = first.split(" (configured timeouts")[0].split(", Timeout:")[0]
        where = settings.shown("mongo_uri") if settings else "MONGO_URI"
        return f"MongoDB ({where}): {name}: {first}; is it up (`sentencify stack status`)?"
    if isinstance(exc, drivers.get("redis", ())):
        return (
            f"Redis ({settings.shown('redis_url') if settings else 'REDIS_URL'}): {first}; is it up (`sentencify stack status`)?"
        )
    if isinstance(exc, drivers.get("postgres", ())):
        return f"PostgreSQL ({settings.shown('analytics_db_uri') if settings else 'ANALYTICS_DB_URI'}): {first}"
    if isinstance(exc, SentencifyError):
        return redact_text(exc.line())
    if isinstance(exc, (ValueError, OSError, *drivers.get("qdrant", ()))):
        return redact_text(first or name)
    return redact_text(f"{name}: {first}")


def main(argv: list[str] | None = None) -> int:
    """Every error ends as one line in words and exit 2; `-v` shows the traceback too."""
    from sentencify import logs
    from sentencify.redact import redact_text

    args = build_parser().parse_args(argv)
    if args.command != "consume":  # the service sets up its own JSON logs
        logs.setup("DEBUG" if args.verbose else "INFO", human=True)
    settings = None
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (the CLI's one place that turns errors into a sentence)
        if args.verbose:
            import traceback

            print(redact_text("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        print(f"error: {explain(exc, settings)}" + ("" if args.verbose else "  (-v for details)"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
