{%- set pinned = checked_revenue_as_of_date(var('revenue_as_of_date', none)) -%}

with

subscriptions as (

    select * from {{ ref('stg_billing__subscriptions') }}

),

billing_synced as (

    -- Billing is re-synced in full every night and every row carries that sync's load time,
    -- so the latest load says how current billing is.
    select max(loaded_at) as billing_synced_at

    from subscriptions

),

run_bounded as (

    -- Never later than this run's start: a row stamped in the future by a loader with a
    -- wrong clock must not recognise revenue for days that have not happened.
    select
        billing_synced_at,
        case
            when billing_synced_at is null or billing_synced_at > {{ run_started_timestamp() }}
                then {{ run_started_timestamp() }}
            else billing_synced_at
        end as current_to_at,
        case
            when billing_synced_at is null or billing_synced_at > {{ run_started_timestamp() }}
                then 'run_started_at'
            else 'billing_sync'
        end as derived_from

    from billing_synced

),

{% if pinned %}

as_of_chosen as (

    select
        billing_synced_at,
        'revenue_as_of_date' as as_of_basis,
        cast('{{ pinned }}' as date) as as_of_date

    from run_bounded

),

{% else %}

as_of_chosen as (

    -- The last day the data reaches into: a sync at midnight covers the day before.
    select
        billing_synced_at,
        derived_from as as_of_basis,
        cast({{ dbt.dateadd('second', -1, 'current_to_at') }} as date) as as_of_date

    from run_bounded

),

{% endif %}

final as (

    select
        -- strings
        as_of_basis,

        -- dates
        as_of_date,

        -- timestamps
        billing_synced_at

    from as_of_chosen

)

select * from final
