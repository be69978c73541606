with

source as (

    select * from {{ source('monitoring', 'schema_changes') }}

),

final as (

    select
        run_id,
        source_name,
        table_name,
        column_name,
        change as change_kind,
        declared_type,
        actual_type,
        renamed_from,
        severity
    from source

)

select * from final
