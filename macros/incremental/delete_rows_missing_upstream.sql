{#
    Pre-hook for incremental models whose rows can disappear upstream: a merge only inserts
    and updates, so a row whose key no longer exists in `upstream_relation` (say a watch session
    that a late event merged into its neighbour) would otherwise stay behind, and the model would
    no longer equal a full refresh. Run before the merge (which only writes keys that exist
    upstream), it leaves the same table as running after it, and it still sees the watermark
    the model itself was compiled with.

    Bounded: with `start_column`, only rows that start no earlier than the earliest start among
    the upstream rows that changed (`upstream_changed_filter`) are checked, and the upstream is
    read from that moment on `upstream_time_column`. Exact when every row that disappears is
    replaced by a changed upstream row that starts no later (a session merged away lives on in
    a session holding a newly loaded event, which starts no later); the constant-per-statement
    bound lets DuckDB skip the older row groups of both tables instead of comparing every key.
    Does nothing on a full refresh or a first run (there is nothing to delete).
#}
{% macro delete_rows_missing_upstream(
    key_column,
    upstream_relation,
    start_column=none,
    upstream_time_column=none,
    upstream_changed_filter=none
) -%}
    {%- if is_incremental() -%}
        {%- if start_column is not none -%}
            {%- set changed_since -%}
                (
                    select min({{ start_column }})
                    from {{ upstream_relation }}
                    where {{ upstream_changed_filter }}
                )
            {%- endset -%}
        {%- endif %}
    {%- set condition -%}
        {%- if start_column is not none %}
        current_rows.{{ start_column }} >= {{ changed_since }}
        and
        {%- endif %}
        not exists (
            select 1
            from {{ upstream_relation }} as upstream
            where
                upstream.{{ key_column }} = current_rows.{{ key_column }}
                {%- if start_column is not none %}
                and upstream.{{ upstream_time_column }} >= {{ changed_since }}
                {%- endif %}
        )
    {%- endset %}
    {{ delete_where(this, 'current_rows', condition) }}
    {%- endif -%}
{%- endmacro %}
