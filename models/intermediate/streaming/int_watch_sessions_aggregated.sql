{#
    One row per viewing session, summed from its sessionised events: the sessions
    fct_watch_sessions publishes and revenue allocation shares revenue by, computed once here,
    so that finance reads an intermediate model rather than a mart.
    A table, incremental, instead of the intermediate folder's view: a view would aggregate
    every event again each time the mart, the allocation or a test reads it; the table is a
    fiftieth of the events' rows and is kept up to date from the newly loaded events only.
    Incremental: only sessions holding events loaded since the watermark minus the look-back
    are recomputed (from all their events) and merged on session_id. A late event can merge
    two sessions into one or move a session's start (and so its id), so the merge alone would
    leave the old session behind: the pre-hook deletes every session whose id no longer
    exists among the sessionised events, and the table equals a full refresh. It checks only
    sessions starting no earlier than the earliest session holding a newly loaded event: a
    session merged away lives on in one that holds a new event and starts no later.
    on_schema_change='fail': a new column must be filled for every session by a full refresh.
#}
{{
    config(
        materialized='incremental',
        unique_key='session_id',
        incremental_strategy='merge',
        on_schema_change='fail',
        pre_hook="{{ delete_rows_missing_upstream(
            'session_id',
            ref('int_watch_events_sessionized'),
            start_column='session_start_at',
            upstream_time_column='event_at',
            upstream_changed_filter=loaded_after_watermark('loaded_at', 'last_loaded_at'),
        ) }}",
    )
}}

{#- Called here, outside the incremental branch, so that dbt records the macro among this
    model's dependencies (see loaded_after_watermark). #}
{%- set loaded_since_watermark = loaded_after_watermark('loaded_at', 'last_loaded_at') %}

with

watch_events as (

    select * from {{ ref('int_watch_events_sessionized') }}

),

{% if is_incremental() %}

-- The same model again, restricted to the events loaded since the watermark. A second import
-- rather than a second reference to `watch_events`: DuckDB and PostgreSQL materialise a CTE
-- that is referenced twice, which here would copy every event on every run.
newly_loaded_watch_events as (

    select * from {{ ref('int_watch_events_sessionized') }}
    where {{ loaded_since_watermark }}

),

touched_sessions as (

    -- A session changes only when it gains an event (a late event that bridges a gap joins
    -- the earlier session; one before a session's start gives it a new id), so the sessions
    -- holding events loaded since the watermark are the only ones to recompute. Sessions
    -- that no longer exist are removed by the pre-hook.
    select
        session_id,
        min(session_start_at) as session_start_at

    from newly_loaded_watch_events
    group by session_id

),

earliest_touched_session as (

    select min(session_start_at) as session_start_at

    from touched_sessions

),

events_to_aggregate as (

    select watch_events.*

    from watch_events
    inner join touched_sessions
        on watch_events.session_id = touched_sessions.session_id
    -- No event of a session precedes its start: a cheap range filter before the join on
    -- the 32-character session id.
    where
        watch_events.event_at
        >= (select earliest_touched_session.session_start_at from earliest_touched_session)

),

{% else %}

events_to_aggregate as (

    select * from watch_events

),

{% endif %}

sessions_aggregated as (

    select
        session_id,
        user_id,
        content_id,
        device_type,
        count(*) as events_count,
        sum(case when event_type = 'pause' then 1 else 0 end) as pauses_count,
        sum(case when event_type = 'seek' then 1 else 0 end) as seeks_count,
        sum(playback_seconds) as watch_seconds,
        max(playhead_seconds) as max_playhead_seconds,
        {{ dbt.bool_or("event_type = 'complete'") }} as is_completed,
        min(event_at) as session_start_at,
        max(event_at) as session_ended_at,
        max(loaded_at) as last_loaded_at

    from events_to_aggregate
    group by
        session_id,
        user_id,
        content_id,
        device_type

),

final as (

    select
        -- ids
        session_id,
        user_id,
        content_id,

        -- strings
        device_type,

        -- numerics
        cast(events_count as {{ dbt.type_bigint() }}) as events_count,
        cast(pauses_count as {{ dbt.type_bigint() }}) as pauses_count,
        cast(seeks_count as {{ dbt.type_bigint() }}) as seeks_count,
        cast(watch_seconds as {{ dbt.type_bigint() }}) as watch_seconds,
        max_playhead_seconds,

        -- booleans
        is_completed,

        -- dates
        cast(session_start_at as date) as session_date,

        -- timestamps
        session_start_at,
        session_ended_at,
        last_loaded_at

    from sessions_aggregated

)

select * from final
