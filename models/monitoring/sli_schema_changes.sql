{#
    Every change the schema check before a build found in a raw table against its declared
    source columns, with the run that found it: the schema-change panel of the morning report
    and the schema-change rate.
#}

with

changes as (

    select * from {{ ref('stg_monitoring__schema_changes') }}

),

runs as (

    select * from {{ ref('stg_monitoring__runs') }}

),

final as (

    select
        changes.run_id,
        changes.source_name,
        changes.table_name,
        changes.column_name,
        changes.change_kind,
        changes.declared_type,
        changes.actual_type,
        changes.renamed_from,
        changes.severity,
        runs.job,
        runs.target,
        runs.started_at as run_started_at
    from changes
    inner join runs on changes.run_id = runs.run_id

)

select * from final
