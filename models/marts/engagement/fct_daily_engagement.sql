{#
    Incremental: a run recomputes, for each account with sessions loaded since the watermark
    (the latest `last_loaded_at` it holds, minus the look-back), every day from the earliest
    such session's day on (`engagement_days_to_recompute`), and appends them after the pre-hook
    has deleted the same account-days. Nothing earlier can change: a session only changes when
    it gains an event, and a session merged away lives on in one that holds a new event and
    starts no later, so the day it counted for is never before the recomputed range. An
    account-day whose sessions all moved to the day before disappears with the delete, as in a
    full refresh. Rebuilding the whole table each day cost a quarter of a daily run at 10M events,
    most of it rebuilding the primary-key index (`mediapulse bench`).
    on_schema_change='fail': the contract fixes the columns; a new column must be filled for
    every day by a full refresh.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_rows_to_recompute(
            engagement_days_to_recompute(
                ref('fct_watch_sessions'),
                loaded_after_watermark('last_loaded_at', 'last_loaded_at'),
            ),
            key_column='user_id',
            time_column='activity_date',
            recompute_from_column='recompute_from_date',
        ) }}",
    )
}}

{#- Called here, outside the incremental branch, so that dbt records the macro among this
    model's dependencies (see loaded_after_watermark). #}
{%- set changed_sessions = loaded_after_watermark('last_loaded_at', 'last_loaded_at') %}

with

watch_sessions as (

    select * from {{ ref('fct_watch_sessions') }}

),

{% if is_incremental() %}

days_to_recompute as (

    {{ engagement_days_to_recompute(ref('fct_watch_sessions'), changed_sessions) }}

),

sessions_to_aggregate as (

    select watch_sessions.*

    from watch_sessions
    inner join days_to_recompute
        on
            watch_sessions.user_id = days_to_recompute.user_id
            and watch_sessions.session_date >= days_to_recompute.recompute_from_date

),

{% else %}

sessions_to_aggregate as (

    select * from watch_sessions

),

{% endif %}

daily_sessions_aggregated as (

    select
        user_id,
        session_date,
        count(*) as sessions_count,
        count(distinct content_id) as distinct_content_count,
        sum(case when is_completed then 1 else 0 end) as completed_sessions_count,
        sum(watch_seconds) as watch_seconds,
        max(last_loaded_at) as last_loaded_at

    from sessions_to_aggregate
    group by
        user_id,
        session_date

),

final as (

    select
        -- ids
        user_id,

        -- numerics
        cast(sessions_count as {{ dbt.type_bigint() }}) as sessions_count,
        cast(distinct_content_count as {{ dbt.type_bigint() }}) as distinct_content_count,
        cast(completed_sessions_count as {{ dbt.type_bigint() }}) as completed_sessions_count,
        cast(watch_seconds as {{ dbt.type_bigint() }}) as watch_seconds,

        -- dates
        session_date as activity_date,

        -- timestamps
        last_loaded_at

    from daily_sessions_aggregated

)

select * from final
