{#
    Row counts of the project's tables and sources after each successful run, the rows each
    run added since the same job's previous run, and whether that was anomalous (a day of
    duplicates is a spike, a lost load a drop to zero): the row-count history of the morning
    report.
#}

with

sizes as (

    select * from {{ ref('stg_monitoring__relation_sizes') }}

),

runs as (

    select * from {{ ref('sli_runs') }}

),

anomalies as (

    select * from {{ ref('stg_monitoring__anomalies') }}
    where metric = 'rows_added'

),

final as (

    select
        sizes.run_id,
        sizes.unique_id,
        sizes.relation,
        runs.job,
        runs.target,
        runs.started_at as run_started_at,
        sizes.row_count,
        anomalies.metric_value as rows_added,
        anomalies.baseline_n,
        anomalies.baseline_median as baseline_median_rows_added,
        anomalies.score as anomaly_score,
        coalesce(anomalies.is_anomaly, false) as is_anomaly
    from sizes
    inner join runs on sizes.run_id = runs.run_id
    left join anomalies
        on
            sizes.run_id = anomalies.run_id
            and sizes.unique_id = anomalies.unique_id

)

select * from final
