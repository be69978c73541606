{#
    Pre-hook for incremental models that recompute, per key, every row from some point in time
    on and append the result: deletes the rows the run is about to recompute, so that a row
    the recompute no longer produces (an account-day whose sessions all moved to another day)
    disappears, as in a full refresh. `recompute_sql` selects one row per `key_column` with the
    first `recompute_from_column` to recompute; the model must select the same rows (share
    the macro that builds it). Does nothing on a full refresh or a first run.
#}
{% macro delete_rows_to_recompute(recompute_sql, key_column, time_column, recompute_from_column) -%}
    {%- if is_incremental() %}
    {%- set condition -%}
    exists (
        select 1
        from ({{ recompute_sql }}) as to_recompute
        where
            to_recompute.{{ key_column }} = held.{{ key_column }}
            and held.{{ time_column }} >= to_recompute.{{ recompute_from_column }}
    )
    {%- endset %}
    {{ delete_where(this, 'held', condition) }}
    {%- endif -%}
{%- endmacro %}
