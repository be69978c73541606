{#
    Incremental models on Spark with Parquet tables. Parquet has no MERGE and no DELETE (Delta
    and Iceberg do; their jars are not part of a plain Spark). The models keep their
    strategies, and on Parquet the two statements are carried out by rewriting the table:
    its new content is written to a scratch table first (Spark refuses to overwrite a table
    the same statement reads), then copied over it. That reads and writes the whole table,
    which is fine on a laptop's data; a cluster uses `file_format: delta`
    (docs/targets/spark.md), where dbt-spark's own MERGE and DELETE run instead.
#}

{#- Whether `relation` (this model's table) is stored in a format that has MERGE and DELETE. -#}
{% macro spark_has_merge() -%}
    {{- return(config.get('file_format', 'parquet') in ['delta', 'iceberg', 'hudi']) -}}
{%- endmacro %}

{#- Replace the rows of `relation` by the result of `select_sql`, which may read it. -#}
{% macro spark_rewrite_table(relation, select_sql) %}
    {%- set scratch_name = relation.identifier ~ '__mediapulse_rewrite' -%}
    {%- set scratch = relation.incorporate(path={"identifier": scratch_name}) -%}
    {%- do run_query('drop table if exists ' ~ scratch) -%}
    {%- do run_query('create table ' ~ scratch ~ ' using parquet as ' ~ select_sql) -%}
    {%- do run_query('insert overwrite table ' ~ relation ~ ' select * from ' ~ scratch) -%}
    {%- do run_query('drop table if exists ' ~ scratch) -%}
{% endmacro %}

{#- dbt-spark allows `merge` only on Delta, Iceberg and Hudi; here also on Parquet, by rewrite. -#}
{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) %}
    {%- if raw_strategy not in ['append', 'merge', 'insert_overwrite', 'microbatch'] -%}
        {{ exceptions.raise_compiler_error(
            "Invalid incremental strategy provided: " ~ raw_strategy
            ~ "; expected one of: 'append', 'merge', 'insert_overwrite', 'microbatch'") }}
    {%- endif -%}
    {{ return(raw_strategy) }}
{% endmacro %}

{#- MERGE on `unique_key` (one column or a list), as a rewrite: the rows whose key the new
    rows do not hold, then the new rows. Returns the statement dbt runs as the model's main
    one; on Parquet the work is done by then, and it only refreshes Spark's file listing. -#}
{% macro spark__get_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) %}
    {%- if spark_has_merge() -%}
        {{ return(dbt_spark.spark__get_merge_sql(
            target, source, unique_key, dest_columns, incremental_predicates
        )) }}
    {%- endif -%}
    {%- if unique_key is none or incremental_predicates -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ model.name ~ ": merge on Parquet (Spark) needs a unique_key and no "
            ~ "incremental_predicates; use file_format 'delta' for anything else") }}
    {%- endif -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- set columns = adapter.get_columns_in_relation(target) | map(attribute='quoted') | list -%}
    {%- set select_sql -%}
        select {{ columns | join(', ') }}
        from {{ target }} as held
        where not exists (
            select 1 from {{ source }} as incoming
            where {% for key in keys -%}
                incoming.{{ key }} = held.{{ key }}{{ ' and ' if not loop.last }}
            {%- endfor %}
        )
        union all
        select {{ columns | join(', ') }} from {{ source }}
    {%- endset -%}
    {%- do spark_rewrite_table(target, select_sql) -%}
    {{ return('refresh table ' ~ target) }}
{% endmacro %}

{#- DELETE FROM `relation` AS `alias` WHERE `condition`, on every engine (the incremental
    pre-hooks). On Parquet it keeps every row but those for which the condition is true (a
    multiset difference: duplicates and rows whose condition is null stay, as with DELETE). -#}
{% macro delete_where(relation, alias, condition) -%}
    {{ return(adapter.dispatch('delete_where', 'mediapulse')(relation, alias, condition)) }}
{%- endmacro %}

{% macro default__delete_where(relation, alias, condition) -%}
    delete from {{ relation }} as {{ alias }}
    where {{ condition }}
{%- endmacro %}

{% macro spark__delete_where(relation, alias, condition) -%}
    {%- if spark_has_merge() -%}
        {{ return(default__delete_where(relation, alias, condition)) }}
    {%- endif -%}
    {%- set select_sql -%}
        select * from {{ relation }}
        except all
        select {{ alias }}.* from {{ relation }} as {{ alias }}
        where {{ condition }}
    {%- endset -%}
    {%- do spark_rewrite_table(relation, select_sql) -%}
    {#- nothing left for the hook itself to run -#}
{%- endmacro %}
