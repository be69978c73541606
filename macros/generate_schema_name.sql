{#
    Production gets the clean schema names (`marts`, `staging`, ...); every other target
    prefixes them with its own schema (`dbt_alice_marts`), so developers sharing one
    warehouse never overwrite each other or production.

    A blue-green release on PostgreSQL sets MEDIAPULSE_SCHEMA_SUFFIX (the green suffix): every
    schema of the release is built under that name beside the live one, and swapped in only
    when everything passed (scripts/mediapulse/release/postgres.py). Unset, names are unchanged.
    The monitoring models are never part of a release (they read the run history, which
    outlives releases): no suffix for them.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set in_release = node is not none and (node.fqn or [])[1:2] != ['monitoring'] -%}
    {%- set suffix = env_var('MEDIAPULSE_SCHEMA_SUFFIX', '') if in_release else '' -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}{{ suffix }}
    {%- elif target.name == 'prod' -%}
        {{ custom_schema_name | trim }}{{ suffix }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}{{ suffix }}
    {%- endif -%}
{%- endmacro %}
