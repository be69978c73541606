with

subscription_months as (

    select * from {{ ref('int_subscription_months_prorated') }}

),

final as (

    select
        -- ids
        subscription_id,
        user_id,

        -- strings
        plan_code,
        currency_code,

        -- numerics
        days_active_in_month,
        days_in_month,
        monthly_price_local,
        monthly_price_usd,
        recognized_revenue_usd,

        -- booleans
        is_active as is_subscription_active,

        -- dates
        revenue_month

    from subscription_months

)

select * from final
