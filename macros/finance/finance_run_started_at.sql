{#
    The instant this dbt invocation started (UTC), as a timestamp literal: the latest moment
    revenue can be recognised through. Its own macro so that unit tests can replace it
    (`overrides: macros: finance_run_started_at: "cast('...' as timestamp)"`) and state a
    fixed "now".
#}
{% macro finance_run_started_at() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}
