{#
    The start of this dbt invocation (`run_started_at`, UTC), truncated to the second, as a
    timestamp literal (SQL): what "now" means wherever load times are checked. No row can have
    been loaded after the run that reads it started, so a later `loaded_at` comes from a clock
    that is ahead (see `not_in_future`, `incremental_watermark`, `newest_load_not_in_future`).

    Also the latest day revenue can be recognised through (`int_revenue_as_of_date`). Unit tests
    state a fixed "now" by replacing it (`overrides: macros: run_started_timestamp: ...`).

    A literal rather than the engine's current time: one value for the whole run on every
    engine, directly comparable with the raw data's UTC timestamps without time zone (whatever
    the session's time zone), and engines prune storage on it.
#}
{% macro run_started_timestamp() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}
