{#
    Run success rate per job and ISO week (weeks start on Monday), against the weekly target
    in `meta.slo`.
#}

with

runs as (

    select * from {{ ref('sli_runs') }}

),

weekly as (

    select
        job,
        cast({{ dbt.date_trunc('week', 'started_at') }} as date) as week_start,
        count(*) as runs,
        sum(case when is_successful then 1 else 0 end) as successful_runs,
        sum(case when is_successful then 0 else 1 end) as failed_runs,
        sum(duration_s) / count(*) as mean_duration_s,
        max(duration_s) as max_duration_s,
        sum(compilation_errors) as compilation_errors,
        sum(schema_changes) as schema_changes
    from runs
    group by job, cast({{ dbt.date_trunc('week', 'started_at') }} as date)

)

select
    job,
    week_start,
    runs,
    successful_runs,
    failed_runs,
    -- a double on every engine (PostgreSQL's numeric division keeps twenty digits)
    cast(successful_runs as double precision) / runs as success_rate,
    {{ monitoring_slo('run_success_rate_weekly') }} as success_rate_target,
    cast(successful_runs as double precision) / runs
    >= {{ monitoring_slo('run_success_rate_weekly') }} as meets_slo,
    mean_duration_s,
    max_duration_s,
    compilation_errors,
    schema_changes
from weekly
