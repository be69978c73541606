with

source as (

    select * from {{ source('monitoring', 'runs') }}

),

final as (

    select
        run_id,
        job,
        target,
        git_revision,
        release_id,
        dbt_version,
        status as run_status,
        -- a refresh that found no new raw rows ran nothing and published nothing: a success
        status in ('success', 'skipped') as is_successful,
        started_at,
        duration_s,
        dbt_seconds,
        nodes as node_count,
        recorded_at
    from source

)

select * from final
