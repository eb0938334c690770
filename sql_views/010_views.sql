-- The views Superset's datasets read (pipeline.md, step 4). `create or replace`: re-runnable.

create or replace view sentencify.v_kpis as
select
    coalesce((select sum(recommendations) from sentencify.fact_traffic), 0)::bigint as total_recommendations,
    coalesce((select sum(contexts) from sentencify.fact_traffic), 0)::bigint as micro_contexts,
    (select count(*) from sentencify.fact_users where has_a)::bigint as users_with_recommendations,
    (select count(*) from sentencify.fact_users where has_a and has_profile)::bigint as users_with_profile,
    case when (select count(*) from sentencify.fact_users where has_a) = 0 then 0.0
         else (select count(*) from sentencify.fact_users where has_a and has_profile)::double precision
              / (select count(*) from sentencify.fact_users where has_a) end as user_coverage;

create or replace view sentencify.v_traffic_hourly as
select event_hour, sum(recommendations)::bigint as recommendations, sum(paraphrase_runs)::bigint as paraphrase_runs,
       sum(selections)::bigint as selections, sum(accepted)::bigint as accepted
from sentencify.fact_traffic group by event_hour;

-- By event hour too, so the dashboard's time-range filter applies (the donut sums the hours).
create or replace view sentencify.v_category_distribution as
select category, sum(recommendations)::bigint as recommendations, event_hour
from sentencify.fact_categories group by category, event_hour;

-- The mean through numeric: a float8 sum of finite latencies can overflow (PostgreSQL then raises
-- "value out of range"), a numeric one cannot; the mean lies within the inputs, so its float8
-- form is finite (least(): numeric keeps 15 digits of a float8, which can round its largest up).
-- round(, 320): a mean below half the smallest float8 (5e-324, 0, 0 -> 1.6e-324) made the cast
-- raise "out of range" (underflow) and the whole view unreadable; at 320 places it is 0 or >= 1e-320.
create or replace view sentencify.v_latency_hourly as
select event_hour, count(*)::bigint as requests,
       least(round(avg(latency_ms::numeric), 320), max(latency_ms)::numeric, 1.7976931348623157e308)::double precision
           as avg_latency_ms,
       percentile_cont(0.95) within group (order by latency_ms) as p95_latency_ms
from sentencify.fact_latency group by event_hour;

create or replace view sentencify.v_golden_data as
select created_hour, count(*)::bigint as golden_examples,
       sum(count(*)) over (order by created_hour)::bigint as golden_examples_total
from sentencify.fact_examples where consistency_flag = 'high' group by created_hour;

create or replace view sentencify.v_acceptance_daily as
select date_trunc('day', event_hour) as day, sum(accepted)::bigint as accepted,
       sum(recommendations)::bigint as recommendations,
       case when sum(recommendations) = 0 then 0.0 else sum(accepted)::double precision / sum(recommendations) end as acceptance_rate
from sentencify.fact_traffic group by 1;

-- The same per hour: a day of traffic is 24 points to read, not one.
create or replace view sentencify.v_acceptance_hourly as
select event_hour, sum(accepted)::bigint as accepted, sum(recommendations)::bigint as recommendations,
       case when sum(recommendations) = 0 then 0.0 else sum(accepted)::double precision / sum(recommendations) end as acceptance_rate
from sentencify.fact_traffic group by event_hour;

create or replace view sentencify.v_funnel as
select 1 as step_order, 'recommended (A)' as step, count(*) filter (where has_a)::bigint as sessions from sentencify.fact_sessions
union all select 2, 'paraphrase run (B)', count(*) filter (where has_a and has_b) from sentencify.fact_sessions
union all select 3, 'selection made (C)', count(*) filter (where has_a and has_b and has_c) from sentencify.fact_sessions
union all select 4, 'accepted (C accepted)', count(*) filter (where has_a and has_b and has_c and accepted) from sentencify.fact_sessions;

-- By category too, for the dashboard's category filter.
create or replace view sentencify.v_quality as
select consistency_flag, coalesce(reason, 'none') as reason, count(*)::bigint as examples,
       coalesce(category, '(none)') as category
from sentencify.fact_examples left join lateral unnest(reasons) as reason on true
group by consistency_flag, coalesce(reason, 'none'), coalesce(category, '(none)');

-- By topic too: a broken producer (the consumer's alarm) shows as one topic's bar.
create or replace view sentencify.v_dead_letters_daily as
select day, reason, sum(dead_letters)::bigint as dead_letters, topic
from sentencify.fact_dead_letters group by day, reason, topic;

create or replace view sentencify.v_pipeline_state as
select distinct on (step) step, window_start as last_window_start, window_end as last_window_end, finished_at
from sentencify.pipeline_runs order by step, window_start desc;

-- Lag from every partition's last report; consumers = those alive now (their snapshots expire).
create or replace view sentencify.v_consumer_lag as
select l.consumer_group, coalesce(c.consumers, 0)::bigint as consumers, sum(l.lag)::bigint as lag,
       max(l.reported_at) as reported_at
from sentencify.consumer_partition_lag l
left join (select consumer_group, count(*) as consumers from sentencify.consumer_state group by consumer_group) c
       using (consumer_group)
group by l.consumer_group, c.consumers;

-- Freshness of each stage, against now() when it is read: the table is what the views step
-- measured at its last run (measured_at), so if the views step stalls, the ages keep growing and
-- the statuses turn stale. Raw logs are stale after 2 h without a new log (is the consumer
-- running?); every later stage is stale once it is over 2 h behind the raw logs (is the chain
-- running?), so a quiet hour never looks like a stalled chain; and every stage is stale once the
-- measurement itself is over 2 h old (the views step stalled: nothing shown is current).
create or replace view sentencify.v_freshness as
with raw as (select newest from sentencify.freshness where stage = 'raw_logs')
select f.stage_order, f.stage, f.newest,
       round(extract(epoch from (now() - f.newest)) / 60.0)::bigint as age_minutes,
       case when f.stage = 'raw_logs' then 0
            else greatest(0, round(extract(epoch from (raw.newest - f.newest)) / 60.0))::bigint end as behind_raw_minutes,
       case when f.newest is null and (f.stage = 'raw_logs' or raw.newest is null) then 'no data yet'
            when f.newest is null then 'stale'
            when now() - f.measured_at > interval '2 hours' then 'stale'
            when f.stage = 'raw_logs' and now() - f.newest > interval '2 hours' then 'stale'
            when f.stage <> 'raw_logs' and raw.newest - f.newest > interval '2 hours' then 'stale'
            else 'fresh' end as status,
       f.measured_at
from sentencify.freshness f cross join raw;

-- Sessions a step could not publish, by step and reason (the dashboard's quarantine chart).
create or replace view sentencify.v_quarantine as
select step, reason, count(*)::bigint as sessions, min(first_seen) as oldest, max(last_seen) as newest
from sentencify.quarantine group by step, reason;

-- Per derived store: what the last check found (missing, extra, different documents; their ids
-- are printed by `sentencify verify`, never stored: they can name a person),
-- whether it agrees now (after a repair, if one ran) and when it last agreed. `status` is
-- 'differs' while a store disagrees, 'repaired' when the check found drift that it repaired,
-- 'not checked lately' when the last check is over two days old.
create or replace view sentencify.v_store_agreement as
select store, step, missing, extra, different,
       case when not agrees then 'differs'
            when now() - checked_at > interval '2 days' then 'not checked lately'
            when missing + extra + different > 0 then 'repaired'
            else 'agrees' end as status,
       checked_at, agreed_at
from sentencify.store_agreement;

-- Ingestion gaps by topic and day found (the dashboard's "ingestion gaps" table): records lost
-- upstream of MongoDB (a count known only as "at least" for a re-created topic), red while any is
-- unacknowledged (`sentencify gaps ack`).
create or replace view sentencify.v_ingestion_gaps as
select (found_at at time zone 'UTC')::date as day, topic,
       count(*)::bigint as gaps,
       sum(coalesce(records, at_least))::bigint as records_lost,
       bool_or(records is null) as count_unknown,
       string_agg(kafka_partition || ':' || first_offset || '..' || coalesce(last_offset::text, '?'), ', '
                  order by kafka_partition, first_offset) as ranges,
       (count(*) filter (where not acknowledged))::bigint as unacknowledged,
       case when bool_or(not acknowledged) then 'unacknowledged' else 'acknowledged' end as status
from sentencify.ingestion_gaps group by 1, 2;

-- Erasure requests by status, with the documents removed per store (the dashboard's erasures table).
create or replace view sentencify.v_erasures as
select e.status, coalesce(r.store, '(none yet)') as store, count(*)::bigint as requests,
       coalesce(sum(r.removed::bigint), 0)::bigint as removed,
       min(e.requested_at) as first_requested, max(e.finished_at) as last_finished
from sentencify.erasures e
left join lateral jsonb_each_text(e.removed) as r(store, removed) on true
group by e.status, coalesce(r.store, '(none yet)');
