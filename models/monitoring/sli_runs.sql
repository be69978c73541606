{#
    One row per run: the SLIs the team measures each run by (success, test pass rate, latency,
    compilation errors, test runtime, schema changes, anomalies), against the targets in
    `meta.slo` (dbt_project.yml, `monitoring:`).
#}

with

runs as (

    select * from {{ ref('stg_monitoring__runs') }}

),

nodes as (

    select * from {{ ref('stg_monitoring__node_results') }}

),

schema_changes as (

    select * from {{ ref('stg_monitoring__schema_changes') }}

),

anomalies as (

    select * from {{ ref('stg_monitoring__anomalies') }}

),

node_counts as (

    select
        run_id,
        sum(case when not is_test and node_status = 'success' then 1 else 0 end) as nodes_built,
        sum(case when is_test then 1 else 0 end) as tests_run,
        sum(case when is_test and node_status = 'pass' then 1 else 0 end) as tests_passed,
        sum(case when is_test and node_status = 'warn' then 1 else 0 end) as tests_warned,
        sum(case when is_test and is_failed then 1 else 0 end) as tests_failed,
        sum(case when not is_test and is_failed then 1 else 0 end) as nodes_failed,
        sum(case when is_compilation_error then 1 else 0 end) as compilation_errors,
        sum(case when is_test then execution_time_s else 0 end) as test_runtime_s
    from nodes
    group by run_id

),

change_counts as (

    select
        run_id,
        count(*) as schema_changes,
        sum(case when severity = 'error' then 1 else 0 end) as schema_change_errors
    from schema_changes
    group by run_id

),

anomaly_counts as (

    select
        run_id,
        sum(case when is_anomaly then 1 else 0 end) as anomalies
    from anomalies
    group by run_id

),

final as (

    select
        runs.run_id,
        runs.job,
        runs.target,
        runs.run_status,
        runs.is_successful,
        runs.started_at,
        runs.duration_s,
        runs.dbt_seconds,
        runs.git_revision,
        runs.release_id,
        coalesce(node_counts.nodes_built, 0) as nodes_built,
        coalesce(node_counts.nodes_failed, 0) as nodes_failed,
        coalesce(node_counts.tests_run, 0) as tests_run,
        coalesce(node_counts.tests_passed, 0) as tests_passed,
        coalesce(node_counts.tests_warned, 0) as tests_warned,
        coalesce(node_counts.tests_failed, 0) as tests_failed,
        -- a warning passes: it is a signal the severity policy chose not to stop a run on
        case
            when coalesce(node_counts.tests_run, 0) = 0 then null
            -- a double on every engine (PostgreSQL's numeric division keeps twenty digits)
            else
                cast(node_counts.tests_run - node_counts.tests_failed as double precision)
                / node_counts.tests_run
        end as test_pass_rate,
        {{ monitoring_slo('test_pass_rate_per_run') }} as test_pass_rate_target,
        coalesce(node_counts.compilation_errors, 0) as compilation_errors,
        coalesce(node_counts.test_runtime_s, 0) as test_runtime_s,
        coalesce(change_counts.schema_changes, 0) as schema_changes,
        coalesce(change_counts.schema_change_errors, 0) as schema_change_errors,
        coalesce(anomaly_counts.anomalies, 0) as anomalies
    from runs
    left join node_counts on runs.run_id = node_counts.run_id
    left join change_counts on runs.run_id = change_counts.run_id
    left join anomaly_counts on runs.run_id = anomaly_counts.run_id

)

select
    *,
    coalesce(test_pass_rate >= test_pass_rate_target, true) as meets_test_pass_slo
from final
