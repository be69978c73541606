{#
    The latest freshness check of every source table, and the checks before it: the source
    freshness panel of the morning report.
#}

with

checks as (

    select * from {{ ref('stg_monitoring__source_freshness') }}

),

final as (

    select
        run_id,
        unique_id,
        source_name,
        table_name,
        freshness_status,
        max_loaded_at,
        snapshotted_at,
        age_hours,
        row_number() over (
            partition by unique_id order by snapshotted_at desc
        ) = 1 as is_latest
    from checks

)

select * from final
