{#
    Rows stamped later than the run's start (`run_started_timestamp`) plus `tolerance_hours`:
    no row can have been loaded after the run that reads it started, so such a `loaded_at`
    comes from a loader whose clock is ahead. Freshness, the replay check and the incremental
    watermarks leave such stamps out, but the row still claims a load that has not happened:
    the unpinned revenue as-of day is read from the newest load, and once the clock reaches the
    stamp an incremental model holding it would take it for a real load and skip what other
    loaders stamped before it. Returns the offending rows.

    Cost: one range filter on the column, which an append-only table stores in load order, so
    engines skip every row group but the newest.
#}
{% test not_in_future(model, column_name, tolerance_hours) %}

select *
from {{ model }}
where
    {{ column_name }}
    > {{ dbt.dateadd('hour', tolerance_hours | int, run_started_timestamp()) }}

{% endtest %}
