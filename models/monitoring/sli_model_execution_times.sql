{#
    Each model's execution time in each run, with the trailing baseline it was judged against
    (the same job's earlier runs; scripts/mediapulse/monitoring/anomalies.py) and whether it was
    anomalous: the execution-time trend of the morning report, and the last successful build
    of every model.
#}

with

nodes as (

    select * from {{ ref('stg_monitoring__node_results') }}
    where resource_type = 'model'

),

runs as (

    select * from {{ ref('sli_runs') }}

),

anomalies as (

    select * from {{ ref('stg_monitoring__anomalies') }}
    where metric = 'execution_time_s'

),

final as (

    select
        nodes.run_id,
        nodes.unique_id,
        nodes.node_name as model_name,
        nodes.owner,
        nodes.is_critical,
        nodes.node_status,
        runs.job,
        runs.target,
        runs.started_at as run_started_at,
        runs.is_successful as run_is_successful,
        nodes.execution_time_s,
        nodes.rows_affected,
        anomalies.baseline_n,
        anomalies.baseline_median as baseline_median_s,
        anomalies.score as anomaly_score,
        coalesce(anomalies.is_anomaly, false) as is_anomaly
    from nodes
    inner join runs on nodes.run_id = runs.run_id
    left join anomalies
        on
            nodes.run_id = anomalies.run_id
            and nodes.unique_id = anomalies.unique_id

)

select * from final
