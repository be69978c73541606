{{ config(tags=['critical']) }}

-- Every dollar of recognised subscription revenue is attributed to a title or kept visible as
-- unallocated: per month, revenue_by_content adds up to fct_subscription_revenue. Allocation
-- rounds each row to six decimals, hence the tolerance. Returns the months that do not add up.

with

subscription_revenue as (

    select * from {{ ref('fct_subscription_revenue') }}

),

revenue_by_content as (

    select * from {{ ref('revenue_by_content') }}

),

recognized_by_month as (

    select
        revenue_month,
        sum(recognized_revenue_usd) as recognized_revenue_usd

    from subscription_revenue
    group by revenue_month

),

allocated_by_month as (

    select
        revenue_month,
        sum(subscription_revenue_usd) as allocated_revenue_usd

    from revenue_by_content
    group by revenue_month

),

final as (

    select
        recognized_by_month.revenue_month,
        recognized_by_month.recognized_revenue_usd,
        allocated_by_month.allocated_revenue_usd

    from recognized_by_month
    left join allocated_by_month
        on recognized_by_month.revenue_month = allocated_by_month.revenue_month
    where
        allocated_by_month.revenue_month is null
        or abs(
            recognized_by_month.recognized_revenue_usd
            - allocated_by_month.allocated_revenue_usd
        )
        > {{ var('revenue_allocation_tolerance_usd') }}

)

select * from final
