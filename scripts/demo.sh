#!/usr/bin/env bash
# `make demo`: the whole platform end to end on the local stack. Each stage says where its log is;
# a failure names its stage. Re-running is safe: every step is idempotent, nothing is stored twice.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sentencify
LOGS=.stack/logs
SESSIONS="${DEMO_SESSIONS:-3000}"
HOURS="${DEMO_HOURS:-24}"
began=$(date +%s)
times=()  # "<stage>: <seconds>s", written to docs/benchmarks/demo.md at the end (bench/report.py)
current="" last=$began
stage() {
  local now; now=$(date +%s)
  [ -z "$current" ] || times+=("$current: $(( now - last ))s")
  current="${1%%:*}" last=$now
  echo; echo "== [$(( now - began ))s] $*"
}
fail() { echo; echo "demo FAILED at stage: $1 (log: $2)" >&2; exit 1; }
mkdir -p "$LOGS"

stage "1/8 local stack: Kafka, MongoDB, Redis, PostgreSQL, Airflow, Superset (logs: $LOGS/)"
$S stack up || fail "stack up" "$LOGS/<service>.log"

stage "2/8 synthetic vectors the search starts with"
$S seed-synthetic --per-category "${DEMO_SYNTHETIC:-50}" || fail "seed-synthetic" "(printed above)"

stage "3/8 a simulated day of traffic: $SESSIONS sessions over ${HOURS}h, ${DEMO_ANOMALIES:-0.05} anomalies -> Kafka"
$S simulate --once --sessions "$SESSIONS" --hours "$HOURS" --anomalies "${DEMO_ANOMALIES:-0.05}" --seed "${DEMO_SEED:-42}" \
  || fail "simulate" "(printed above)"

stage "4/8 ingestion: Kafka -> MongoDB until drained (log: $LOGS/demo-consume.log)"
METRICS_PORT=-1 $S consume --until-idle 3 2>"$LOGS/demo-consume.log" || fail "consume" "$LOGS/demo-consume.log"
tail -n 1 "$LOGS/demo-consume.log"

stage "5/8 the chain for every hour of the day, through the Airflow scheduler: etl -> profile -> vectors -> views"
.venv/bin/python -m sentencify.demo_chain --hours "$HOURS" \
  || fail "chain" "$LOGS/airflow-scheduler.log and the task logs in the Airflow UI"

stage "6/8 the dashboard -> Superset"
$S dashboard deploy || fail "dashboard deploy" "$LOGS/superset.log"

stage "7/8 the dashboard draws (headless chromium, logged in)"
$S dashboard screenshot --out artifacts/demo-dashboard.png || fail "dashboard screenshot" "$LOGS/superset.log"

stage "8/8 summary"
$S summary || fail "summary" "(printed above)"
echo
$S stack status | tail -n 3
echo "Dashboard:  $(.venv/bin/python -c 'from sentencify.dashboard import dashboard_url; from sentencify.settings import Settings; print(dashboard_url(Settings.from_env()))')"
echo
now=$(date +%s)
times+=("$current: $(( now - last ))s")
.venv/bin/python -m bench.report demo --command "make demo (DEMO_SESSIONS=$SESSIONS DEMO_HOURS=$HOURS)" \
  "demo took $(( now - began ))s" "${times[@]}" || echo "(could not write docs/benchmarks/demo.md)"
echo "demo took $(( now - began ))s"
