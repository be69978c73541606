{#
    Version 2, the latest: version 1 without `birth_year` (see the doc block `dim_users`).
#}

with

users as (

    select * from {{ ref('stg_accounts__users') }}

),

subscriptions as (

    select * from {{ ref('stg_billing__subscriptions') }}

),

countries as (

    select * from {{ ref('countries') }}

),

plans as (

    select * from {{ ref('plans') }}

),

subscription_history as (

    select
        user_id,
        count(*) as subscriptions_count,
        min(started_at) as first_subscription_started_at,
        max(ended_at) as latest_subscription_ended_at,
        {{ dbt.bool_or('is_active') }} as has_active_subscription

    from subscriptions
    group by user_id

),

active_subscriptions_ranked as (

    select
        user_id,
        plan_code,
        row_number() over (
            partition by user_id
            order by started_at desc, subscription_id desc
        ) as recency_rank

    from subscriptions
    where is_active

),

current_plans as (

    select
        active_subscriptions_ranked.user_id,
        plans.plan_code,
        plans.plan_name,
        plans.has_ads

    from active_subscriptions_ranked
    inner join plans
        on active_subscriptions_ranked.plan_code = plans.plan_code
    where active_subscriptions_ranked.recency_rank = 1

),

final as (

    select
        -- ids
        users.user_id,

        -- strings
        users.country_code,
        -- Codes missing from seed `countries` are kept, and reported as 'Unknown'.
        coalesce(countries.country_name, 'Unknown') as country_name,
        coalesce(countries.region, 'Unknown') as region,
        current_plans.plan_code as current_plan_code,
        current_plans.plan_name as current_plan_name,

        -- numerics
        cast(coalesce(subscription_history.subscriptions_count, 0) as {{ dbt.type_bigint() }})
            as subscriptions_count,

        -- booleans
        coalesce(subscription_history.has_active_subscription, false)
            as has_active_subscription,
        coalesce(current_plans.has_ads, false) as is_on_ad_supported_plan,
        users.is_marketing_opted_in,

        -- timestamps
        users.signed_up_at,
        subscription_history.first_subscription_started_at,
        case
            when not coalesce(subscription_history.has_active_subscription, false)
                then subscription_history.latest_subscription_ended_at
        end as last_subscription_ended_at,
        users.updated_at

    from users
    left join countries
        on users.country_code = countries.country_code
    left join subscription_history
        on users.user_id = subscription_history.user_id
    left join current_plans
        on users.user_id = current_plans.user_id

)

select * from final
