-- Fact tables the views step fills from MongoDB. Re-runnable: every statement is idempotent.
-- Window-keyed tables hold what the records *ingested* in one window contribute, bucketed by
-- event time; re-running a window replaces exactly its rows, and the views sum across windows.
create schema if not exists sentencify;

create table if not exists sentencify.fact_traffic (
    window_start     timestamptz not null,
    event_hour       timestamptz not null,
    recommendations  integer not null default 0,   -- A
    contexts         integer not null default 0,   -- E
    paraphrase_runs  integer not null default 0,   -- B
    selections       integer not null default 0,   -- C
    accepted         integer not null default 0,   -- C with was_accepted
    primary key (window_start, event_hour)
);

create table if not exists sentencify.fact_categories (
    window_start     timestamptz not null,
    event_hour       timestamptz not null,
    category         text not null,
    recommendations  integer not null,
    primary key (window_start, event_hour, category)
);

create table if not exists sentencify.fact_latency (  -- one row per I record: exact percentiles
    window_start     timestamptz not null,
    event_hour       timestamptz not null,
    latency_ms       double precision not null
);
create index if not exists fact_latency_window on sentencify.fact_latency (window_start);
create index if not exists fact_latency_hour on sentencify.fact_latency (event_hour);

create table if not exists sentencify.fact_dead_letters (
    window_start     timestamptz not null,
    day              date not null,
    topic            text not null,
    reason           text not null,
    dead_letters     integer not null,
    primary key (window_start, day, topic, reason)
);

-- Keyed by entity: upserted for the sessions/users a window touches (their state can change later).
create table if not exists sentencify.fact_examples (
    example_id       text primary key,
    created_hour     timestamptz not null,
    consistency_flag text not null,
    reasons          text[] not null
);

-- The example's final_category, for the dashboard's category filter (added after the first release).
alter table sentencify.fact_examples add column if not exists category text;

create table if not exists sentencify.fact_sessions (
    session_id       text primary key,
    has_a            boolean not null,
    has_b            boolean not null,
    has_c            boolean not null,
    accepted         boolean not null
);

create table if not exists sentencify.fact_users (
    user_id          text primary key,
    has_a            boolean not null,
    has_profile      boolean not null
);

create table if not exists sentencify.pipeline_runs (
    step             text not null,
    window_start     timestamptz not null,
    window_end       timestamptz not null,
    finished_at      timestamptz not null,
    summary          jsonb not null,
    primary key (step, window_start)
);

-- The running consumers as they last reported to Redis (replaced by every views run).
create table if not exists sentencify.consumer_state (
    consumer         text primary key,
    consumer_group   text not null,
    lag              bigint not null,
    stored           bigint not null,
    dead_letters     bigint not null,
    updated_at       timestamptz not null
);

-- The last lag reported for each partition of each group (replaced by every views run). Kept
-- after a group's consumers stop, so a stopped group with records waiting still shows them.
create table if not exists sentencify.consumer_partition_lag (
    consumer_group   text not null,
    partition        text not null,
    lag              bigint not null,
    reported_at      timestamptz not null,
    primary key (consumer_group, partition)
);

-- How fresh each stage is: the newest data it reflects (replaced by every views run; see
-- sentencify/steps/freshness.py for what "newest" means per stage).
create table if not exists sentencify.freshness (
    stage            text primary key,
    stage_order      integer not null,
    newest           timestamptz,
    measured_at      timestamptz not null
);

-- Sessions a step could not publish (sentencify/steps/quarantine.py; replaced by every views run).
create table if not exists sentencify.quarantine (
    step             text not null,
    session_id       text not null,
    reason           text not null,
    detail           text not null,
    first_seen       timestamptz not null,
    last_seen        timestamptz not null,
    primary key (step, session_id)
);

-- The last check of each derived store against MongoDB (`sentencify verify`, the daily
-- sentencify_verify DAG; replaced by every views run from MongoDB's `store_checks`).
create table if not exists sentencify.store_agreement (
    store            text primary key,
    step             text not null,
    missing          bigint not null,
    extra            bigint not null,
    different        bigint not null,
    repaired         boolean not null,
    agrees           boolean not null,
    checked_at       timestamptz not null,
    agreed_at        timestamptz
);

-- Records that left Kafka before the consumer read them (MongoDB `ingestion_gaps`, sentencify/gaps.py;
-- replaced by every views run). last_offset and count are null when unknown (a re-created topic).
create table if not exists sentencify.ingestion_gaps (
    gap_id           text primary key,
    topic            text not null,
    kafka_partition  integer not null,
    first_offset     bigint not null,
    last_offset      bigint,
    records          bigint,
    at_least         bigint not null,
    reason           text not null,
    found_at         timestamptz not null,
    acknowledged     boolean not null,
    acknowledged_at  timestamptz
);

-- Erasure requests (sentencify/erasure/forget.py; replaced by every views run): no personal data,
-- the user's keyed hash cut to 16 hex digits; `removed` = documents removed per store.
create table if not exists sentencify.erasures (
    request          text primary key,
    status           text not null,
    requested_at     timestamptz not null,
    finished_at      timestamptz,
    removed          jsonb not null
);
