with

revenue_allocations as (

    select * from {{ ref('int_subscription_revenue_allocated') }}

),

ad_impressions as (

    select * from {{ ref('fct_ad_impressions') }}

),

revenue_as_of as (

    select * from {{ ref('int_revenue_as_of_date') }}

),

allocations_aggregated as (

    select
        content_id,
        revenue_month,
        sum(allocated_revenue_usd) as subscription_revenue_usd,
        0 as ad_revenue_usd,
        sum(watch_seconds) as watch_seconds

    from revenue_allocations
    group by
        content_id,
        revenue_month

),

ad_revenue_aggregated as (

    -- Ads served after the as-of day are not revenue as of that day.
    select
        ad_impressions.content_id,
        cast({{ dbt.date_trunc('month', 'ad_impressions.served_date') }} as date) as revenue_month,
        0 as subscription_revenue_usd,
        sum(ad_impressions.revenue_usd) as ad_revenue_usd,
        0 as watch_seconds

    from ad_impressions
    inner join revenue_as_of
        on ad_impressions.served_date <= revenue_as_of.as_of_date
    group by
        ad_impressions.content_id,
        cast({{ dbt.date_trunc('month', 'ad_impressions.served_date') }} as date)

),

unioned as (

    select * from allocations_aggregated
    union all
    select * from ad_revenue_aggregated

),

content_months_aggregated as (

    select
        content_id,
        revenue_month,
        sum(subscription_revenue_usd) as subscription_revenue_usd,
        sum(ad_revenue_usd) as ad_revenue_usd,
        sum(watch_seconds) as watch_seconds

    from unioned
    group by
        content_id,
        revenue_month

),

final as (

    select
        -- ids
        {{ dbt_utils.generate_surrogate_key(['content_id', 'revenue_month']) }}
            as content_revenue_id,
        content_id,

        -- numerics
        cast(subscription_revenue_usd as decimal(18, 6)) as subscription_revenue_usd,
        cast(ad_revenue_usd as decimal(18, 6)) as ad_revenue_usd,
        cast(subscription_revenue_usd + ad_revenue_usd as decimal(18, 6)) as total_revenue_usd,
        cast(watch_seconds as {{ dbt.type_bigint() }}) as watch_seconds,
        {{ divide_rounded('watch_seconds', 3600, scale=4) }} as watch_hours,

        -- booleans
        content_id is null as is_unallocated,

        -- dates
        revenue_month

    from content_months_aggregated

)

select * from final
