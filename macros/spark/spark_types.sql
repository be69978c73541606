{#
    Type names on Spark. The YAML of this project spells a string column `text` (contracts,
    seed column types) or `varchar` (source columns), as DuckDB and PostgreSQL both accept;
    Spark knows `string` only (a bare `varchar` needs a length there). dbt casts a contracted
    column's declared type (`cast`, when it checks the contract) and a seed's column types
    (macros/spark/seeds.sql) through this one translation.
#}
{% macro spark_type(data_type) -%}
    {%- set name = data_type | trim | lower -%}
    {{- 'string' if name in ('text', 'varchar', 'character varying') else data_type -}}
{%- endmacro %}

{% macro spark__cast(field, type) -%}
    cast({{ field }} as {{ spark_type(type) }})
{%- endmacro %}
