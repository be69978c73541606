with

source as (

    select * from {{ source('ads', 'ad_impressions') }}

),

load_order_ranked as (

    select
        *,
        row_number() over (
            partition by impression_id
            order by
                loaded_at,
                served_ts,
                user_id,
                content_id,
                campaign_id,
                device_type,
                ad_position,
                revenue_micros
        ) as load_rank

    from source

),

first_loaded as (

    select * from load_order_ranked
    where load_rank = 1

),

final as (

    select
        -- ids
        impression_id,
        user_id,
        content_id,
        campaign_id,

        -- strings
        device_type,
        ad_position,

        -- numerics
        ad_duration_sec as ad_duration_seconds,
        revenue_micros,

        -- booleans
        is_completed,
        is_clicked,

        -- timestamps
        served_ts as served_at,
        loaded_at

    from first_loaded

)

select * from final
