{#
    Production gets the clean schema names (`marts`, `staging`, ...); every other target
    prefixes them with its own schema (`dbt_alice_marts`), so developers sharing one
    warehouse never overwrite each other or production.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name == 'prod' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
