#!/usr/bin/env bash
# First start of the PostgreSQL volume: one database per concern, each with its own login.
# Airflow metadata, Superset metadata, and the analytics views (owner writes, reader reads).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
create role airflow login password '${AIRFLOW_DB_PASSWORD}';
create database airflow owner airflow;
create role superset login password '${SUPERSET_DB_PASSWORD}';
create database superset owner superset;
create role sentencify login password '${ANALYTICS_DB_PASSWORD}';
create database analytics owner sentencify;
-- Superset's read-only login; the views step grants it select (sql_views/020_reader_grants.sql).
create role sentencify_reader login password '${ANALYTICS_READER_PASSWORD}';
-- Timestamps from year 1 to 9999 stay readable whatever zone a client asks for.
alter role sentencify_reader set timezone = 'UTC';
-- The views step names the session holding a lock it waited for; its state and age need this.
grant pg_read_all_stats to sentencify;
SQL
