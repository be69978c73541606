{#
    The published sessions: the sessions of int_watch_sessions_aggregated (where they are
    computed) with the title's running time and how far into it the session got.
    Incremental: a session of the intermediate model changes only when it gains an event, and
    then its last_loaded_at is that event's load or later, so a run merges on session_id the
    sessions whose last_loaded_at is later than this table's watermark minus the look-back.
    The pre-hook deletes the sessions the intermediate model no longer holds (merged away by a
    late event, or renamed by a moved start), checking only those starting no earlier than the
    earliest session it merges, as the intermediate model's own pre-hook does; so the table
    equals a full refresh.
    on_schema_change='fail': the contract fixes the columns; a new column must be filled for
    every session by a full refresh, not left null for old ones ('append_new_columns').
#}
{{
    config(
        materialized='incremental',
        unique_key='session_id',
        incremental_strategy='merge',
        on_schema_change='fail',
        pre_hook="{{ delete_rows_missing_upstream(
            'session_id',
            ref('int_watch_sessions_aggregated'),
            start_column='session_start_at',
            upstream_time_column='session_start_at',
            upstream_changed_filter=loaded_after_watermark('last_loaded_at', 'last_loaded_at'),
        ) }}",
    )
}}

{#- Called here, outside the incremental branch, so that dbt records the macro among this
    model's dependencies (see loaded_after_watermark). #}
{%- set loaded_since_watermark = loaded_after_watermark('last_loaded_at', 'last_loaded_at') %}

with

watch_sessions as (

    select * from {{ ref('int_watch_sessions_aggregated') }}
    {%- if is_incremental() %}
    where {{ loaded_since_watermark }}
    {%- endif %}

),

content as (

    select * from {{ ref('stg_catalog__content') }}

),

content_duration_joined as (

    select
        watch_sessions.*,
        content.duration_seconds as content_duration_seconds

    from watch_sessions
    left join content
        on watch_sessions.content_id = content.content_id

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
        events_count,
        pauses_count,
        seeks_count,
        watch_seconds,
        max_playhead_seconds,
        content_duration_seconds,
        cast(
            case
                when content_duration_seconds > 0
                    then least(1.0 * max_playhead_seconds / content_duration_seconds, 1.0)
            end as decimal(5, 4)
        ) as completion_ratio,

        -- booleans
        is_completed,

        -- dates
        session_date,

        -- timestamps
        session_start_at,
        session_ended_at,
        last_loaded_at

    from content_duration_joined

)

select * from final
