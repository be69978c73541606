{#
    A table instead of the intermediate folder's view: six tests and revenue_by_content read
    it, and a view would aggregate every watch session in the history again for each of them
    (measured by `mediapulse bench`: at 10M events each test of the view took 5-7 s, the
    largest share of a refresh's time).
#}
{{ config(materialized='table') }}

with

subscription_months as (

    select * from {{ ref('int_subscription_months_prorated') }}

),

watch_sessions as (

    -- Sessions, not events: the same watch time, already summed and kept up to date
    -- incrementally, at a fiftieth of the rows. The intermediate sessions rather than the
    -- mart fct_watch_sessions built from them (the same rows): the layers flow one way.
    select * from {{ ref('int_watch_sessions_aggregated') }}

),

revenue_as_of as (

    select * from {{ ref('int_revenue_as_of_date') }}

),

user_month_revenue as (

    select
        user_id,
        revenue_month,
        sum(recognized_revenue_usd) as revenue_usd

    from subscription_months
    group by
        user_id,
        revenue_month

),

user_content_month_watch as (

    -- Watch time counts in the month its session started, and only through the as-of day:
    -- a month's shares are those of the days its revenue is recognised for.
    select
        watch_sessions.user_id,
        watch_sessions.content_id,
        cast({{ dbt.date_trunc('month', 'watch_sessions.session_date') }} as date) as revenue_month,
        sum(watch_sessions.watch_seconds) as watch_seconds

    from watch_sessions
    inner join revenue_as_of
        on watch_sessions.session_date <= revenue_as_of.as_of_date
    group by
        watch_sessions.user_id,
        watch_sessions.content_id,
        cast({{ dbt.date_trunc('month', 'watch_sessions.session_date') }} as date)
    having sum(watch_sessions.watch_seconds) > 0

),

user_month_watch as (

    select
        user_id,
        revenue_month,
        sum(watch_seconds) as user_watch_seconds

    from user_content_month_watch
    group by
        user_id,
        revenue_month

),

allocated_to_content as (

    -- Every account's watch time per title and month, with its share of the account's
    -- revenue that month (none for accounts that paid nothing that month).
    select
        user_content_month_watch.user_id,
        user_content_month_watch.content_id,
        user_content_month_watch.revenue_month,
        user_content_month_watch.watch_seconds,
        user_month_watch.user_watch_seconds,
        -- Exact: DuckDB would turn a decimal divided by seconds into a double.
        {{ divide_rounded(
            'coalesce(user_month_revenue.revenue_usd, 0) * user_content_month_watch.watch_seconds',
            'user_month_watch.user_watch_seconds',
        ) }} as allocated_revenue_usd,
        false as is_unallocated

    from user_content_month_watch
    inner join user_month_watch
        on
            user_content_month_watch.user_id = user_month_watch.user_id
            and user_content_month_watch.revenue_month = user_month_watch.revenue_month
    left join user_month_revenue
        on
            user_content_month_watch.user_id = user_month_revenue.user_id
            and user_content_month_watch.revenue_month = user_month_revenue.revenue_month

),

left_unallocated as (

    -- Paying accounts that watched nothing that month: their revenue cannot be attributed
    -- to a title, but it must not vanish from the totals either.
    select
        user_month_revenue.user_id,
        cast(null as {{ dbt.type_bigint() }}) as content_id,
        user_month_revenue.revenue_month,
        0 as watch_seconds,
        0 as user_watch_seconds,
        cast(user_month_revenue.revenue_usd as decimal(18, 6)) as allocated_revenue_usd,
        true as is_unallocated

    from user_month_revenue
    left join user_month_watch
        on
            user_month_revenue.user_id = user_month_watch.user_id
            and user_month_revenue.revenue_month = user_month_watch.revenue_month
    where user_month_watch.user_id is null

),

unioned as (

    select * from allocated_to_content
    union all
    select * from left_unallocated

),

final as (

    select
        -- ids
        {{ dbt_utils.generate_surrogate_key(['user_id', 'revenue_month', 'content_id']) }}
            as allocation_id,
        user_id,
        content_id,

        -- numerics
        cast(watch_seconds as {{ dbt.type_bigint() }}) as watch_seconds,
        cast(user_watch_seconds as {{ dbt.type_bigint() }}) as user_watch_seconds,
        allocated_revenue_usd,

        -- booleans
        is_unallocated,

        -- dates
        revenue_month

    from unioned

)

select * from final
