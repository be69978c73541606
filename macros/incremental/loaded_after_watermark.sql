{#
    The filter an incremental model uses to pick the rows it (re)processes: rows of an upstream
    relation whose `column` is later than this model's watermark (the latest `watermark_column`
    it already holds) minus var('incremental_lookback_hours'), so rows a loader commits late are
    still picked up. A model that holds no rows yet has no watermark and takes every row.

    The watermark is read before the model runs and written into the SQL as a literal: compared
    with a subquery, a literal lets every engine prune storage on it (zone maps, partitions)
    and keeps the plan a plain filter.
#}
{% macro loaded_after_watermark(column='loaded_at', watermark_column='loaded_at') -%}
    {%- if not execute -%}
        {{ return('(1 = 1)') }}
    {%- endif -%}
    {%- set watermark_query -%}
        select
            {{ dbt.dateadd(
                'hour',
                -1 * var('incremental_lookback_hours') | int,
                'max(' ~ watermark_column ~ ')'
            ) }} as watermark
        from {{ this }}
    {%- endset -%}
    {%- set watermark = run_query(watermark_query).columns[0].values()[0] -%}
    {%- if watermark is none -%}
        (1 = 1)
    {%- else -%}
        {{ column }} > cast('{{ watermark }}' as {{ dbt.type_timestamp() }})
    {%- endif -%}
{%- endmacro %}
