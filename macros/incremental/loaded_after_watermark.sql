{#
    The filter an incremental model uses to pick the rows it (re)processes: rows of an upstream
    relation whose `column` is later than this model's watermark (the latest `watermark_column`
    it already holds that is not in the future, see `incremental_watermark`) minus
    var('incremental_lookback_hours'), so rows a loader commits late are still picked up. A
    model that holds no rows yet has no watermark and takes every row, and so does a full
    refresh (`(1 = 1)`).

    Models call it once, unconditionally, at the top (`{% set ... = loaded_after_watermark(...) %}`)
    and use the result in their incremental branch: dbt records the macros a model calls while
    parsing, when `is_incremental()` is false, so a call made only inside that branch would be
    missing from the model's `depends_on.macros`, and slim CI (`state:modified`) would not rebuild
    the incremental models when this macro changes.

    The watermark is written into the SQL as a literal: compared with a subquery, a literal lets
    every engine prune storage on it (zone maps, partitions) and keeps the plan a plain filter.
#}
{% macro loaded_after_watermark(column='loaded_at', watermark_column='loaded_at') -%}
    {%- if not is_incremental() -%}
        (1 = 1)
    {%- else -%}
        {%- set watermark = incremental_watermark(watermark_column) -%}
        {%- if watermark is none -%}
            (1 = 1)
        {%- else -%}
            {{ column }} > {{ dbt.dateadd(
                'hour',
                -1 * var('incremental_lookback_hours') | int,
                "cast('" ~ watermark ~ "' as " ~ dbt.type_timestamp() ~ ")"
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{#
    The latest `watermark_column` this incremental model holds that is not later than the run's
    start, as text ('YYYY-MM-DD hh:mm:ss'), read before the model runs; none when the model
    holds no such row (or while dbt only parses).

    Not later than the run's start: a row a loader with a wrong clock stamped ahead (fault
    `future_loaded_at`) would otherwise be the watermark, and every row loaded after it, stamped
    correctly and so earlier, would fall below the watermark and never be picked up, while the
    model kept succeeding. Such stamps are left out rather than the maximum capped at the run's
    start (`least(max(...), start)`): a cap would move the watermark up to this run's start and
    skip what was loaded between the previous run and this one, where leaving them out keeps it
    at the latest real load the model holds. Exact: a held row stamped ahead stays above the
    watermark, so each run takes it up again until its time comes, and every incremental model
    skips or merges the rows it already holds, as it does for the look-back window.
    What this cannot do: once the clock reaches such a stamp it counts like any other load
    (nothing in the table tells it apart), and the first run that sees it so skips the rows
    other loaders stamped between the previous run and that stamp minus the look-back. Hence
    the source test `not_in_future`, which stops `dbt build` on any stamp more than
    var('loaded_at_future_tolerance_hours') ahead before it reaches a model; a stamp let
    through at most that far ahead can only shorten the look-back by as much, which is why a
    deployment reading only real loads keeps the tolerance to its loaders' clock skew.

    A macro of its own so that unit tests can replace it (`overrides: macros:`): in a unit
    test `this` is a CTE of given rows, which a query run before the model cannot read.
#}
{% macro incremental_watermark(watermark_column='loaded_at') -%}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set watermark_query -%}
        select max({{ watermark_column }}) as watermark
        from {{ this }}
        where {{ watermark_column }} <= {{ run_started_timestamp() }}
    {%- endset -%}
    {%- set watermark = run_query(watermark_query).columns[0].values()[0] -%}
    {{ return(none if watermark is none else watermark | string) }}
{%- endmacro %}
