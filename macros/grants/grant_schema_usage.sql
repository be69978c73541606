{#
    dbt's `grants` config grants SELECT on each relation it builds, but a role also needs
    USAGE on the relation's schema to reach it, which dbt does not grant. At the end of a run
    (on-run-end), every schema of `schemas` that exists gets USAGE for exactly the roles its
    relations are granted to. A blue-green release builds green schemas
    ($MEDIAPULSE_SCHEMA_SUFFIX set): nothing is granted on them here, whether the build
    passed or not; the swap grants USAGE in the transaction that makes them live
    (scripts/mediapulse/release/postgres.py), so no reader reaches a green or a kept release. A CI
    run's schemas (target `postgres_ci`) stay its own.
#}
{% macro grant_schema_usage(schemas) -%}
    {%- set green = env_var('MEDIAPULSE_SCHEMA_SUFFIX', '') -%}
    {%- if execute and target.type == 'postgres' and target.name != 'postgres_ci' and schemas -%}
        {%- set roles_by_schema = {} -%}
        {%- for node in graph.nodes.values()
                if node.resource_type in ('model', 'seed', 'snapshot')
                and node.schema in schemas
                and not (green and node.schema.endswith(green)) -%}
            {%- for role in (node.config.grants or {}).get('select', []) -%}
                {%- set roles = roles_by_schema.setdefault(node.schema, []) -%}
                {%- if role not in roles -%}{%- do roles.append(role) -%}{%- endif -%}
            {%- endfor -%}
        {%- endfor -%}
        {%- if roles_by_schema -%}
            {%- set existing = run_query(
                "select nspname from pg_catalog.pg_namespace where nspname in ('"
                ~ (roles_by_schema.keys() | list | join("', '")) ~ "')"
            ).columns[0].values() -%}
            {%- for schema in existing | sort %}
grant usage on schema {{ adapter.quote(schema) }} to
    {%- for role in roles_by_schema[schema] %}
    {{ adapter.quote(role) }}{{ "," if not loop.last }}
    {%- endfor %};
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
