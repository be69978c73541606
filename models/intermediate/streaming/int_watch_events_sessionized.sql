{#
    A table, incremental, instead of the intermediate folder's view: sessionising means
    window functions over every event, which is the most expensive step of the project. A run
    recomputes only the viewing keys (user, title, device) that received events since the
    watermark minus the look-back, and of each only the events from the start of the session
    its earliest new event joins (`sessions_to_recompute`): a late event can merge two
    sessions into one or move a session's start (and so its id), but nothing before that
    session. Events never disappear, so merging the recomputed events on `event_id` gives
    exactly what a full refresh gives.
    The history is read from a constant lower bound on `event_at` (`incremental_recompute_floor`)
    and the table is written in load order, so DuckDB's zone maps skip the row groups of older
    days instead of probing every event twice (`mediapulse bench` measures the difference).
    The merge key is (event_id, event_at) although event_id alone is unique: staging keeps an
    event's first copy and never changes it, so an event's event_at never changes either, and
    the extra column lets the merge skip the row groups older than the recomputed events
    (DuckDB pushes the range of the merged rows' event_at into the scan of this table) instead
    of comparing all 10M+ event ids.
    on_schema_change='fail': a new column needs a full refresh to be filled for old events.
#}
{{
    config(
        materialized='incremental',
        unique_key=['event_id', 'event_at'],
        incremental_strategy='merge',
        on_schema_change='fail',
    )
}}

{#- Called here, outside the incremental branch, so that dbt records the macro among this
    model's dependencies (see loaded_after_watermark). #}
{%- set loaded_since_watermark = loaded_after_watermark('loaded_at') %}
{%- set recompute_floor = incremental_recompute_floor(
    ref('stg_streaming__watch_events'), loaded_since_watermark
) %}
{#- Nothing loaded since the watermark: a bound no event meets (null), so nothing is read. #}
{%- set history_since = recompute_floor or 'cast(null as ' ~ dbt.type_timestamp() ~ ')' %}

with

watch_events as (

    select * from {{ ref('stg_streaming__watch_events') }}

),

{% if is_incremental() %}

-- The same model again, restricted to the rows loaded since the watermark. A second import
-- rather than a second reference to `watch_events`: DuckDB and PostgreSQL materialise a CTE
-- that is referenced twice, which here would copy the whole event history on every run.
newly_loaded_watch_events as (

    select * from {{ ref('stg_streaming__watch_events') }}
    where {{ loaded_since_watermark }}

),

viewing_keys_to_recompute as (

    {{ sessions_to_recompute('newly_loaded_watch_events', this, history_since) }}

),

events_to_sessionize as (

    select watch_events.*

    from watch_events
    inner join viewing_keys_to_recompute
        on
            watch_events.user_id = viewing_keys_to_recompute.user_id
            and watch_events.content_id = viewing_keys_to_recompute.content_id
            and watch_events.device_type = viewing_keys_to_recompute.device_type
            and watch_events.event_at >= viewing_keys_to_recompute.recompute_from_at
    -- the constant bound: lets the scan skip the history no viewing key recomputes
    where watch_events.event_at >= {{ history_since }}

),

{% else %}

events_to_sessionize as (

    select * from watch_events

),

{% endif %}

neighbours_found as (

    -- All windows share one partitioning and order, so the events are sorted only once.
    select
        *,
        lag(event_at) over (
            partition by user_id, content_id, device_type
            order by event_at, event_id
        ) as previous_event_at,
        lead(event_at) over (
            partition by user_id, content_id, device_type
            order by event_at, event_id
        ) as following_event_at

    from events_to_sessionize

),

session_starts_flagged as (

    select
        *,
        case
            when previous_event_at is null then 1
            when
                {{ dbt.datediff('previous_event_at', 'event_at', 'second') }}
                > {{ var('session_inactivity_minutes') * 60 }}
                then 1
            else 0
        end as starts_session,
        -- The next event of the same session: the following event of the viewing key,
        -- unless the gap to it is long enough to start a new session.
        case
            when
                {{ dbt.datediff('event_at', 'following_event_at', 'second') }}
                <= {{ var('session_inactivity_minutes') * 60 }}
                then following_event_at
        end as next_event_at

    from neighbours_found

),

sessions_started as (

    select
        *,
        -- The latest session start up to this event is the start of this event's session.
        max(case when starts_session = 1 then event_at end) over (
            partition by user_id, content_id, device_type
            order by event_at, event_id
            rows between unbounded preceding and current row
        ) as session_start_at

    from session_starts_flagged

),

playback_measured as (

    select
        *,
        case
            when
                event_type in ('play', 'resume', 'heartbeat', 'seek')
                and next_event_at is not null
                then cast(
                    least(
                        {{ dbt.datediff('event_at', 'next_event_at', 'second') }},
                        {{ var('max_playback_seconds_per_event') }}
                    ) as {{ dbt.type_int() }}
                )
            else 0
        end as playback_seconds

    from sessions_started

),

sessionized as (

    select
        -- ids
        event_id,
        {{ dbt_utils.generate_surrogate_key([
            'user_id',
            'content_id',
            'device_type',
            'session_start_at',
        ]) }} as session_id,
        user_id,
        content_id,

        -- strings
        device_type,
        event_type,

        -- numerics
        playhead_seconds,
        playback_seconds,

        -- booleans
        starts_session = 1 as is_session_start,

        -- timestamps
        event_at,
        next_event_at,
        session_start_at,
        loaded_at

    from playback_measured

),

{% if is_incremental() %}

already_sessionized as (

    -- The rows the table holds from the bound on, to compare against: every recomputed event
    -- it holds is among them (its event_at is at least its key's recompute start), and the
    -- join on event_id below picks exactly those.
    select * from {{ this }}
    where event_at >= {{ history_since }}

),

final as (

    -- Of the recomputed events, only those that are new or whose session or playback
    -- changed need merging; the rest are already in the table as they are.
    select sessionized.*

    from sessionized
    left join already_sessionized
        on sessionized.event_id = already_sessionized.event_id
    where
        already_sessionized.event_id is null
        or sessionized.session_id <> already_sessionized.session_id
        or sessionized.is_session_start <> already_sessionized.is_session_start
        or sessionized.playback_seconds <> already_sessionized.playback_seconds
        or sessionized.next_event_at is distinct from already_sessionized.next_event_at

)

{% else %}

final as (

    select * from sessionized

)

{% endif %}

select * from final
{%- if not is_incremental() %}
-- Load order, as later runs append: the table's zone maps on `loaded_at` and `event_at` then
-- let incremental runs (here and in int_watch_sessions_aggregated) skip all but the latest
-- row groups.
order by loaded_at, event_id
{%- endif %}
