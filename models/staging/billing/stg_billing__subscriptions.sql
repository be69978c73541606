with

source as (

    select * from {{ source('billing', 'subscriptions') }}

),

final as (

    select
        -- ids
        subscription_id,
        user_id,

        -- strings
        plan_code,
        status,
        currency as currency_code,

        -- numerics
        price_amount as monthly_price_local,

        -- booleans
        ended_at is null as is_active,

        -- timestamps
        started_at,
        ended_at,
        updated_at,
        loaded_at

    from source

)

select * from final
