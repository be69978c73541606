{#
    A table instead of the intermediate folder's view: eight tests and two models read it, and
    a view would prorate every subscription period over the month calendar again for each of
    them (measured by `mediapulse bench`: the tests of the two finance intermediates were the
    largest share of a refresh's time at 10M events).
#}
{{ config(materialized='table') }}

with

subscriptions as (

    select * from {{ ref('int_subscriptions_converted_to_usd') }}

),

revenue_as_of as (

    select * from {{ ref('int_revenue_as_of_date') }}

),

month_spine as (

    {{ dbt_utils.date_spine(
        datepart='month',
        start_date="cast('" ~ var('revenue_calendar_start_date') ~ "' as date)",
        end_date="cast('" ~ var('revenue_calendar_end_date') ~ "' as date)",
    ) }}

),

calendar_months as (

    select cast(date_month as date) as month_start_date

    from month_spine

),

months_bounded as (

    select
        month_start_date,
        cast({{ dbt.dateadd('month', 1, 'month_start_date') }} as date) as next_month_start_date

    from calendar_months

),

active_days_bounded as (

    -- Days are counted from the start day (included) to the end day (excluded: the day of a
    -- plan change belongs to the new plan), and never past the as-of day (included): a period
    -- that ended after it, or has not ended, earns through the as-of day.
    select
        subscriptions.*,
        case
            when cast(subscriptions.ended_at as date) <= revenue_as_of.as_of_date
                then cast(subscriptions.ended_at as date)
            else cast({{ dbt.dateadd('day', 1, 'revenue_as_of.as_of_date') }} as date)
        end as active_until_date,
        (
            subscriptions.ended_at is null
            or cast(subscriptions.ended_at as date) > revenue_as_of.as_of_date
        ) as is_active_on_as_of_date

    from subscriptions
    cross join revenue_as_of
    -- A period that starts after the as-of day does not exist yet on that day: it books
    -- nothing (no row, rather than negative days).
    where subscriptions.started_date <= revenue_as_of.as_of_date

),

subscription_months_joined as (

    select
        active_days_bounded.*,
        months_bounded.month_start_date,
        months_bounded.next_month_start_date

    from active_days_bounded
    inner join months_bounded
        on
            active_days_bounded.active_until_date > months_bounded.month_start_date
            and active_days_bounded.started_date < months_bounded.next_month_start_date

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
        -- Exact: DuckDB would turn a decimal divided by days into a double.
        {{ divide_rounded('monthly_price_usd * days_active_in_month', 'days_in_month') }}
            as recognized_revenue_usd,

        -- booleans
        is_active_on_as_of_date as is_active,

        -- dates
        month_start_date as revenue_month

    from days_counted

)

select * from final
