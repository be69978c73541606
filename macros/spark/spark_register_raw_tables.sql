{#
    `mediapulse load-raw --target spark` (scripts/mediapulse/data/sparkload.py): the demo raw
    tables, written as Parquet files by the loader, become tables of the Spark catalog. External
    tables over the loader's files: dropping one to point it at a newer load never deletes
    data. `tables` maps schema.table to the directory of its files.
#}
{% macro spark_register_raw_tables(tables) %}
    {%- if target.type != 'spark' -%}
        {{ exceptions.raise_compiler_error(
            "spark_register_raw_tables is for Spark targets; target '" ~ target.name
            ~ "' is " ~ target.type) }}
    {%- endif -%}
    {%- for name, location in tables.items() -%}
        {%- set schema = name.split('.')[0] -%}
        {%- do run_query('create schema if not exists ' ~ schema) -%}
        {%- do run_query('drop table if exists ' ~ name) -%}
        {%- do run_query("create table " ~ name ~ " using parquet location '" ~ location ~ "'") -%}
        {%- do log('registered ' ~ name ~ ' -> ' ~ location, info=true) -%}
    {%- endfor -%}
{% endmacro %}
