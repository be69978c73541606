with

watch_sessions as (

    select * from {{ ref('fct_watch_sessions') }}

),

daily_sessions_aggregated as (

    select
        user_id,
        session_date,
        count(*) as sessions_count,
        count(distinct content_id) as distinct_content_count,
        sum(case when is_completed then 1 else 0 end) as completed_sessions_count,
        sum(watch_seconds) as watch_seconds

    from watch_sessions
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
        session_date as activity_date

    from daily_sessions_aggregated

)

select * from final
