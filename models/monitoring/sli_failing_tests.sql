{#
    Every test that failed, errored or warned, in every run, with the model or source it tests
    and that node's owner: the failing-tests panel of the morning report and what alerts are
    routed by.
#}

with

nodes as (

    select * from {{ ref('stg_monitoring__node_results') }}

),

runs as (

    select * from {{ ref('stg_monitoring__runs') }}

),

tested as (

    -- the tested node's owner and criticality, as its latest results give them
    select
        unique_id,
        max(owner) as owner,  -- noqa: RF04
        max(case when is_critical then 1 else 0 end) = 1 as is_critical
    from nodes
    where not is_test
    group by unique_id

),

final as (

    select
        nodes.run_id,
        nodes.unique_id,
        nodes.node_name as test_name,
        nodes.resource_type,
        nodes.node_status,
        nodes.failures,
        nodes.message,
        nodes.tested_node,
        coalesce(nodes.owner, tested.owner) as owner,  -- noqa: RF04
        nodes.is_critical or coalesce(tested.is_critical, false) as is_critical,
        runs.job,
        runs.target,
        runs.started_at as run_started_at
    from nodes
    inner join runs on nodes.run_id = runs.run_id
    left join tested on nodes.tested_node = tested.unique_id
    where nodes.is_test and (nodes.is_failed or nodes.node_status = 'warn')

)

select * from final
