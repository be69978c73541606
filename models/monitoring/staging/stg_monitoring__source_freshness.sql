with

source as (

    select * from {{ source('monitoring', 'source_freshness') }}

),

final as (

    select
        run_id,
        unique_id,
        source_name,
        table_name,
        status as freshness_status,
        max_loaded_at,
        snapshotted_at,
        age_s / 3600.0 as age_hours
    from source

)

select * from final
