{#
    A table, incremental, instead of the intermediate folder's ephemeral: sessionising means
    window functions over every event, which is the most expensive step of the project. A run
    recomputes only the viewing keys (user, title, device) that received events since the
    watermark minus the look-back, and all events of those keys, because a late event can
    merge or split the sessions around it. Events never disappear, so merging the recomputed
    events on `event_id` gives exactly what a full refresh gives.
    on_schema_change='fail': a new column needs a full refresh to be filled for old events.
#}
{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='merge',
        on_schema_change='fail',
    )
}}

with

watch_events as (

    select * from {{ ref('stg_streaming__watch_events') }}

),

{% if is_incremental() %}

touched_viewing_keys as (

    select distinct
        user_id,
        content_id,
        device_type

    from watch_events
    where {{ loaded_after_watermark('loaded_at') }}

),

events_to_sessionize as (

    select watch_events.*

    from watch_events
    inner join touched_viewing_keys
        on
            watch_events.user_id = touched_viewing_keys.user_id
            and watch_events.content_id = touched_viewing_keys.content_id
            and watch_events.device_type = touched_viewing_keys.device_type

),

{% else %}

events_to_sessionize as (

    select * from watch_events

),

{% endif %}

previous_event_found as (

    select
        *,
        lag(event_at) over (
            partition by user_id, content_id, device_type
            order by event_at, event_id
        ) as previous_event_at

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
        end as starts_session

    from previous_event_found

),

sessions_numbered as (

    select
        *,
        sum(starts_session) over (
            partition by user_id, content_id, device_type
            order by event_at, event_id
            rows between unbounded preceding and current row
        ) as viewing_session_number

    from session_starts_flagged

),

sessions_started as (

    select
        *,
        min(event_at) over (
            partition by user_id, content_id, device_type, viewing_session_number
        ) as session_start_at,
        lead(event_at) over (
            partition by user_id, content_id, device_type, viewing_session_number
            order by event_at, event_id
        ) as next_event_at

    from sessions_numbered

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

final as (

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

)

select * from final
