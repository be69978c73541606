{#
    Post-hook for incremental models whose rows can disappear upstream: a merge only inserts
    and updates, so a row whose key no longer exists in `upstream_relation` (say a watch session
    that a late event merged into its neighbour) would otherwise stay behind, and the model would
    no longer equal a full refresh.
#}
{% macro delete_rows_missing_upstream(key_column, upstream_relation) -%}
    delete from {{ this }} as current_rows
    where not exists (
        select 1
        from {{ upstream_relation }} as upstream
        where upstream.{{ key_column }} = current_rows.{{ key_column }}
    )
{%- endmacro %}
