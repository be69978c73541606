{#
    Rows stamped later than the run's start (`run_started_timestamp`) plus `tolerance_hours`:
    no row can have been loaded after the run that reads it started, so such a `loaded_at`
    comes from a loader whose clock is ahead. One such row would move the data's own "now":
    `dbt source freshness` and the recency tests would see a load that has not happened, the
    replay check (`redelivered_within_window`) and the revenue as-of day are counted from it,
    and an incremental model holding it once its time comes would skip what other loaders
    stamped before it. Returns the offending rows.

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
