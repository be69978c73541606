with

source as (

    select * from {{ source('monitoring', 'anomalies') }}

),

final as (

    select
        run_id,
        job,
        unique_id,
        metric,
        value as metric_value,
        baseline_n,
        baseline_median,
        baseline_mad,
        score,
        is_anomaly
    from source

)

select * from final
