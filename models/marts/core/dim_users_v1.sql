{#
    Version 1, deprecated: version 2 plus `birth_year`, for the consumers that still read it
    until the deprecation date. Delete this file (and the version) then.
#}

with

users_v2 as (

    select * from {{ ref('dim_users', v=2) }}

),

users as (

    select * from {{ ref('stg_accounts__users') }}

),

final as (

    select
        -- ids
        users_v2.user_id,

        -- strings
        users_v2.country_code,
        users_v2.country_name,
        users_v2.region,
        users_v2.current_plan_code,
        users_v2.current_plan_name,

        -- numerics
        users.birth_year,
        users_v2.subscriptions_count,

        -- booleans
        users_v2.has_active_subscription,
        users_v2.is_on_ad_supported_plan,
        users_v2.is_marketing_opted_in,

        -- timestamps
        users_v2.signed_up_at,
        users_v2.first_subscription_started_at,
        users_v2.last_subscription_ended_at,
        users_v2.updated_at

    from users_v2
    left join users
        on users_v2.user_id = users.user_id

)

select * from final
