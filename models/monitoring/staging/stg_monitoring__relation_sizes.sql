with

source as (

    select * from {{ source('monitoring', 'relation_sizes') }}

),

final as (

    select
        run_id,
        unique_id,
        relation,
        row_count,
        measured_at
    from source

)

select * from final
