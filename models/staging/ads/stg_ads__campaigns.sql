with

source as (

    select * from {{ source('ads', 'campaigns') }}

),

final as (

    select
        -- ids
        campaign_id,

        -- strings
        advertiser_name,
        campaign_name,

        -- numerics
        cpm_usd,
        budget_usd,
        target_impressions,

        -- dates
        start_date,
        end_date,

        -- timestamps
        updated_at,
        loaded_at

    from source

)

select * from final
