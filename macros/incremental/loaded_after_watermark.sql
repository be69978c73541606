{#
    The filter an incremental model uses to pick the rows it (re)processes: rows of an upstream
    relation whose `column` is later than this model's watermark (the latest `watermark_column`
    it already holds) minus var('incremental_lookback_hours'), so rows a loader commits late are
    still picked up. A model that holds no rows yet has no watermark and takes every row.
#}
{% macro loaded_after_watermark(column='loaded_at', watermark_column='loaded_at') -%}
    (
        not exists (select 1 from {{ this }})
        or {{ column }} > (
            select
                {{ dbt.dateadd(
                    'hour',
                    -1 * var('incremental_lookback_hours') | int,
                    'max(' ~ watermark_column ~ ')'
                ) }}
            from {{ this }}
        )
    )
{%- endmacro %}
