-- Ordering only (`depends_on`, nothing is read from it): waits for the titles dimension,
-- which is built after the tests of titles and genres (player events, read here for the
-- as-of day, have foreign keys to titles; accounts come through the subscriptions import).
-- `dbt build` skips a model after a failed test on several tables (a relationships test)
-- only when the model is downstream of all of them, so without these a failing foreign key
-- in staging would not stop this model and the marts built from it.
-- depends_on: {{ ref('dim_content') }}

with

subscriptions as (

    select * from {{ ref('int_subscriptions_converted_to_usd') }}

),

watch_events as (

    select * from {{ ref('stg_streaming__watch_events') }}

),

calendar_months as (

    select cast(date_month as date) as month_start_date

    from (
        {{ dbt_utils.date_spine(
            datepart='month',
            start_date="cast('" ~ var('revenue_calendar_start_date') ~ "' as date)",
            end_date="cast('" ~ var('revenue_calendar_end_date') ~ "' as date)",
        ) }}
    ) as month_spine

),

months_bounded as (

    select
        month_start_date,
        cast({{ dbt.dateadd('month', 1, 'month_start_date') }} as date) as next_month_start_date

    from calendar_months

),

data_as_of as (

    -- The day the data is current to. Billing rows are loaded only when they change, so the
    -- billing table cannot tell how current it is; player events stream in continuously, so
    -- their latest load can. var('revenue_as_of_date') pins it for reproducible reports.
    {% if var('revenue_as_of_date', none) %}
    select cast('{{ var("revenue_as_of_date") }}' as date) as as_of_date
    {% else %}
    select cast(max(loaded_at) as date) as as_of_date

    from watch_events
    {% endif %}

),

active_days_bounded as (

    select
        subscriptions.*,
        -- Days are counted from the start day (included) to the end day (excluded: the day
        -- of a plan change belongs to the new plan), or through the as-of day while active.
        coalesce(
            cast(subscriptions.ended_at as date),
            cast({{ dbt.dateadd('day', 1, 'data_as_of.as_of_date') }} as date)
        ) as active_until_date

    from subscriptions
    cross join data_as_of

),

subscription_months_joined as (

    select
        active_days_bounded.*,
        months_bounded.month_start_date,
        months_bounded.next_month_start_date

    from active_days_bounded
    inner join months_bounded
        on
            months_bounded.month_start_date < active_days_bounded.active_until_date
            and months_bounded.next_month_start_date > active_days_bounded.started_date

),

days_counted as (

    select
        *,
        {{ dbt.datediff(
            'greatest(started_date, month_start_date)',
            'least(active_until_date, next_month_start_date)',
            'day',
        ) }} as days_active_in_month,
        {{ dbt.datediff('month_start_date', 'next_month_start_date', 'day') }} as days_in_month

    from subscription_months_joined

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
        cast(days_active_in_month as {{ dbt.type_int() }}) as days_active_in_month,
        cast(days_in_month as {{ dbt.type_int() }}) as days_in_month,
        monthly_price_local,
        monthly_price_usd,
        cast(
            monthly_price_usd * days_active_in_month / days_in_month as decimal(18, 6)
        ) as recognized_revenue_usd,

        -- booleans
        is_active,

        -- dates
        month_start_date as revenue_month

    from days_counted

)

select * from final
