{#
    What a generic test reads from the relation it tests: dbt's own `where` config, and, on a
    refresh run (`mediapulse refresh`), only the rows that run loaded.

    dbt wraps the `model` argument of every generic test (ours and the packages') in this
    macro, so overriding it here scopes every row-level rule at once. A refresh sets
    MEDIAPULSE_REFRESH_SINCE to the newest raw `loaded_at` the live release had read, and a
    test reads the rows loaded after it minus var('incremental_lookback_hours') (what the
    incremental models re-read); a test
    is scoped when the relation it tests names its load-time column in `meta.new_rows_column`
    (dbt_project.yml: the incremental models and the event sources). Rules that need the whole
    history (uniqueness across it, reconciliations, distributions, gaps between days:
    `var('whole_history_tests')`) are not run by a refresh at all; the nightly runs them
    unscoped, as every other job does (docs/test-severity.md, "Which job runs which test").

    The environment variable is read only while executing (`execute`), never while dbt
    parses, so a refresh reuses the project's parse like any other run.
#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do conditions.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set new_rows = refresh_new_rows_filter() -%}
    {%- if new_rows -%}
        {%- do conditions.append(new_rows) -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- set filtered = conditions | join(' and ') -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ filtered ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}


{#
    The rows of the tested relation that this refresh loaded, as a SQL condition; '' when the
    run is not a refresh or the relation has no load-time column.
#}
{% macro refresh_new_rows_filter() -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set since = env_var('MEDIAPULSE_REFRESH_SINCE', '') -%}
    {%- if not since -%}
        {{ return('') }}
    {%- endif -%}
    {#- the tested model (dbt records it), or the tested source (the test's only parent) -#}
    {%- set tested = graph.nodes.get(model.attached_node) if model.attached_node else none -%}
    {%- set parents = model.depends_on.nodes -%}
    {%- if tested is none and parents | length == 1 and parents[0].startswith('source.') -%}
        {%- set tested = graph.sources.get(parents[0]) -%}
    {%- endif -%}
    {%- if tested is none -%}
        {{ return('') }}
    {%- endif -%}
    {%- set meta = tested.config.meta or tested.meta or {} -%}
    {%- set column = meta.get('new_rows_column') -%}
    {%- if not column -%}
        {{ return('') }}
    {%- endif -%}
    {#- minus the look-back the incremental models re-read: rows a loader committed late, with
        a stamp before the live release's newest load, are processed now and tested now -#}
    {%- set after = dbt.dateadd(
        'hour',
        -1 * var('incremental_lookback_hours') | int,
        "cast('" ~ since ~ "' as " ~ dbt.type_timestamp() ~ ")",
    ) -%}
    {{ return(column ~ ' > ' ~ after) }}
{%- endmacro %}
