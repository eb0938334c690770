"""`python -m consumer [--until-idle SECONDS]`: run the ingestion service."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from sentencify import logs
from sentencify.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consume", description="Ingest every log topic from Kafka into MongoDB.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--until-idle",
        type=float,
        metavar="SECONDS",
        help="exit once nothing arrived for SECONDS and all is written and committed",
    )
    parser.add_argument("--group", help="consumer group id (default: CONSUMER_GROUP)")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    from consumer.service import IngestService

    logs.setup(args.log_level)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = IngestService(settings, until_idle_s=args.until_idle, group_id=args.group).run()
    # A MongoDB write that never answers keeps its writer thread busy, and Python waits for such
    # threads at exit: past SHUTDOWN_TIMEOUT_S. Its records are uncommitted and are read again.
    if any(t.name.startswith("mongo-write") and t.is_alive() for t in threading.enumerate()):
        logging.getLogger("sentencify.consumer").warning("exiting with a MongoDB write unanswered; its records are re-read")
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
