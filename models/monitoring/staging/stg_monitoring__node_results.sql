with

source as (

    select * from {{ source('monitoring', 'node_results') }}

),

final as (

    select
        run_id,
        unique_id,
        resource_type,
        name as node_name,
        status as node_status,
        execution_time_s,
        rows_affected,
        failures,
        message,
        tested_node,
        is_critical,
        owner,
        started_at,
        resource_type in ('test', 'unit_test') as is_test,
        status in ('fail', 'error', 'runtime error') as is_failed,
        -- dbt reports a Jinja or SQL that does not compile as an error with this prefix
        status = 'error' and message like '%Compilation Error%' as is_compilation_error
    from source

)

select * from final
