#!/usr/bin/env bash
# `make demo`: what exists so far, end to end on the local stack. Each stage says where its log is.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sentencify
LOGS=.stack/logs
stage() { echo; echo "== $*"; }
fail() { echo "demo failed at stage: $1 (log: $2)" >&2; exit 1; }
began=$(date +%s)

stage "1/6 local stack (Kafka, MongoDB, Redis, PostgreSQL, Airflow)"
$S stack up || fail "stack up" "$LOGS/"
mkdir -p "$LOGS"

stage "2/6 synthetic vectors the search starts with"
$S seed-synthetic --per-category "${DEMO_SYNTHETIC:-50}" || fail "seed-synthetic" "(printed above)"

stage "3/6 simulated traffic: ${DEMO_SESSIONS:-3000} sessions over 24h, ${DEMO_ANOMALIES:-0.05} anomalies"
$S simulate --sessions "${DEMO_SESSIONS:-3000}" --hours 24 --anomalies "${DEMO_ANOMALIES:-0.05}" --seed "${DEMO_SEED:-42}" \
  || fail "simulate" "(printed above)"

stage "4/6 ingestion: Kafka -> MongoDB until drained (log: $LOGS/demo-consume.log)"
METRICS_PORT=-1 $S consume --until-idle 3 2>"$LOGS/demo-consume.log" || fail "consume" "$LOGS/demo-consume.log"
tail -n 1 "$LOGS/demo-consume.log"

stage "5/6 the chain through the Airflow scheduler: ETL -> profiles -> vectors for this hour"
.venv/bin/python -m sentencify.demo_chain || fail "chain" "$LOGS/airflow-scheduler.log and the task logs in the Airflow UI"

stage "6/6 summary"
$S summary
$S stack status | tail -n 6
echo "demo took $(( $(date +%s) - began ))s"
