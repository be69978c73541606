{#
    Every mart tagged `critical`, the last successful run that built it, and whether that is
    older than its freshness target (`meta.slo` in dbt_project.yml): the "last successful run
    per critical model" panel of the morning report, and a page when one is stale. A critical
    mart never built by a successful run is stale.
#}
{%- set by_model = monitoring_slo('critical_mart_freshness_hours_by_model') or {} -%}
{%- set default_hours = monitoring_slo('critical_mart_freshness_hours') -%}
{%- set marts = [] -%}
{%- for node in graph.nodes.values()
        if node.resource_type == 'model' and node.package_name == project_name
        and node.fqn[1] == 'marts' and 'critical' in node.tags -%}
{%- do marts.append(node) -%}
{%- endfor -%}

with

critical_marts as (

    {% for node in marts | sort(attribute='name') -%}
    select
        cast('{{ node.unique_id }}' as {{ dbt.type_string() }}) as unique_id,
        cast('{{ node.name }}' as {{ dbt.type_string() }}) as model_name,
        -- the owning group (its team): `owner`, as in the run history
        cast('{{ node.config.group or '' }}' as {{ dbt.type_string() }}) as owner,  -- noqa: RF04
        {{ by_model.get(node.name, default_hours) }} as freshness_slo_hours
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

builds as (

    select * from {{ ref('sli_model_execution_times') }}
    where node_status = 'success' and run_is_successful

),

last_builds as (

    select
        unique_id,
        max(run_started_at) as last_built_at
    from builds
    group by unique_id

),

final as (

    select
        critical_marts.unique_id,
        critical_marts.model_name,
        critical_marts.owner,
        critical_marts.freshness_slo_hours,
        last_builds.last_built_at,
        {{ dbt.datediff('last_builds.last_built_at', "(now() at time zone 'UTC')", 'minute') }}
        / 60.0 as hours_since_last_build
    from critical_marts
    left join last_builds on critical_marts.unique_id = last_builds.unique_id

)

select
    *,
    coalesce(hours_since_last_build <= freshness_slo_hours, false) as meets_slo
from final
