#!/usr/bin/env bash
# `make demo`: what exists so far, end to end on the local stack. Each stage says where its log is.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sentencify
LOGS=.stack/logs
stage() { echo; echo "== $*"; }
fail() { echo "demo failed at stage: $1 (log: $2)" >&2; exit 1; }

stage "1/4 local stack"
$S stack up || fail "stack up" "$LOGS/"
mkdir -p "$LOGS"

stage "2/4 simulated traffic: ${DEMO_SESSIONS:-3000} sessions over 24h, ${DEMO_ANOMALIES:-0.05} anomalies"
$S simulate --sessions "${DEMO_SESSIONS:-3000}" --hours 24 --anomalies "${DEMO_ANOMALIES:-0.05}" --seed "${DEMO_SEED:-42}" \
  || fail "simulate" "(printed above)"

stage "3/4 ingestion: Kafka -> MongoDB until drained (log: $LOGS/demo-consume.log)"
METRICS_PORT=-1 $S consume --until-idle 3 2>"$LOGS/demo-consume.log" || fail "consume" "$LOGS/demo-consume.log"
tail -n 1 "$LOGS/demo-consume.log"

stage "4/4 summary"
$S summary
