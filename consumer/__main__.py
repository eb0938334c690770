"""`python -m consumer [--until-idle SECONDS]`: run the ingestion service."""

from __future__ import annotations

import argparse
import sys

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
    return IngestService(settings, until_idle_s=args.until_idle, group_id=args.group).run()


if __name__ == "__main__":
    sys.exit(main())
