with

subscriptions as (

    select * from {{ ref('stg_billing__subscriptions') }}

),

exchange_rates as (

    select * from {{ ref('exchange_rates') }}

),

rate_periods as (

    select
        currency_code,
        usd_per_unit,
        valid_from,
        lead(valid_from) over (
            partition by currency_code
            order by valid_from
        ) as valid_until

    from exchange_rates

),

subscriptions_dated as (

    select
        *,
        cast(started_at as date) as started_date

    from subscriptions

),

rate_at_start_joined as (

    select
        subscriptions_dated.*,
        rate_periods.usd_per_unit

    from subscriptions_dated
    left join rate_periods
        on
            subscriptions_dated.currency_code = rate_periods.currency_code
            and subscriptions_dated.started_date >= rate_periods.valid_from
            and (
                rate_periods.valid_until is null
                or subscriptions_dated.started_date < rate_periods.valid_until
            )

),

final as (

    select
        -- ids
        subscription_id,
        user_id,

        -- strings
        plan_code,
        status,
        currency_code,

        -- numerics
        monthly_price_local,
        usd_per_unit as usd_per_unit_at_start,
        cast(monthly_price_local * usd_per_unit as decimal(18, 6)) as monthly_price_usd,

        -- booleans
        is_active,

        -- dates
        started_date,

        -- timestamps
        started_at,
        ended_at,
        loaded_at

    from rate_at_start_joined

)

select * from final
