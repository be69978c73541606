with

ad_impressions as (

    select * from {{ ref('fct_ad_impressions') }}

),

campaigns as (

    select * from {{ ref('stg_ads__campaigns') }}

),

daily_delivery as (

    select
        campaign_id,
        served_date as delivery_date,
        count(*) as impressions_count,
        sum(case when is_completed then 1 else 0 end) as completed_impressions_count,
        sum(case when is_clicked then 1 else 0 end) as clicks_count,
        sum(revenue_usd) as revenue_usd

    from ad_impressions
    group by
        campaign_id,
        served_date

),

delivery_accumulated as (

    select
        *,
        sum(impressions_count) over (
            partition by campaign_id
            order by delivery_date
            rows between unbounded preceding and current row
        ) as cumulative_impressions_count,
        sum(revenue_usd) over (
            partition by campaign_id
            order by delivery_date
            rows between unbounded preceding and current row
        ) as cumulative_revenue_usd

    from daily_delivery

),

flight_joined as (

    select
        delivery_accumulated.*,
        campaigns.advertiser_name,
        campaigns.campaign_name,
        campaigns.budget_usd,
        campaigns.target_impressions,
        campaigns.start_date as campaign_start_date,
        campaigns.end_date as campaign_end_date,
        {{ dbt.datediff('campaigns.start_date', 'campaigns.end_date', 'day') }} + 1
            as flight_days_count,
        {{ dbt.datediff('campaigns.start_date', 'delivery_accumulated.delivery_date', 'day') }} + 1
            as flight_day_number

    from delivery_accumulated
    left join campaigns
        on delivery_accumulated.campaign_id = campaigns.campaign_id

),

pacing_measured as (

    select
        *,
        -- Even delivery over the flight: by day n of an N-day flight, n/N of the booking.
        1.0 * target_impressions
        * greatest(least(flight_day_number, flight_days_count), 0)
        / nullif(flight_days_count, 0) as expected_impressions_to_date

    from flight_joined

),

final as (

    select
        -- ids
        campaign_id,

        -- strings
        advertiser_name,
        campaign_name,

        -- numerics
        cast(impressions_count as {{ dbt.type_bigint() }}) as impressions_count,
        cast(completed_impressions_count as {{ dbt.type_bigint() }}) as completed_impressions_count,
        cast(clicks_count as {{ dbt.type_bigint() }}) as clicks_count,
        cast(revenue_usd as decimal(18, 6)) as revenue_usd,
        cast(cumulative_impressions_count as {{ dbt.type_bigint() }})
            as cumulative_impressions_count,
        cast(cumulative_revenue_usd as decimal(18, 6)) as cumulative_revenue_usd,
        target_impressions,
        budget_usd,
        cast(flight_days_count as {{ dbt.type_int() }}) as flight_days_count,
        cast(flight_day_number as {{ dbt.type_int() }}) as flight_day_number,
        cast(
            cumulative_impressions_count / nullif(expected_impressions_to_date, 0)
            as decimal(12, 4)
        ) as impressions_pacing_ratio,
        cast(
            cumulative_revenue_usd / nullif(budget_usd, 0) as decimal(12, 4)
        ) as budget_spent_ratio,

        -- dates
        delivery_date,
        campaign_start_date,
        campaign_end_date

    from pacing_measured

)

select * from final
