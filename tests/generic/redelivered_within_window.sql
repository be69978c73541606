{#
    Replays by the loader. An at-least-once source re-sends a row (same id) shortly after the
    first copy; staging keeps the first copy, so re-sent copies never reach the marts. A copy
    that lands more than `window_hours` after the first copy of its id is not a re-send but a
    replay of old data (a loader re-reading an old offset, a backfill run twice): the marts
    stay right, but the loader needs looking at.

    Returns one row per id whose latest copy was loaded more than `window_hours` after its
    first copy, with both load times and the number of copies.

    Cost: only ids with a copy loaded in the last `window_hours` before the table's newest
    load (not later than the run's start) are checked (a scan of `loaded_at_column`, which an
    append-only table stores in load order, so engines prune it), and only their copies are
    aggregated (a semi-join on the id), instead of grouping the whole table by id. That is exact
    for every replay that landed in the last `window_hours`, so nothing is missed as long as the
    test runs at least once per `window_hours` (the nightly build does): an older replay was
    reported by the runs that saw it.
#}
{% test redelivered_within_window(model, column_name, loaded_at_column, window_hours) %}

{%- set window_hours = window_hours | int -%}

with

newest_load as (

    -- Not later than the run's start: a row a loader with a wrong clock stamped ahead (caught
    -- by `not_in_future`) would otherwise move the window away from the real loads.
    select max({{ loaded_at_column }}) as newest_loaded_at
    from {{ model }}
    where {{ loaded_at_column }} <= {{ run_started_timestamp() }}

),

recently_loaded_ids as (

    select distinct copies.{{ column_name }} as recent_id

    from {{ model }} as copies
    cross join newest_load
    where
        copies.{{ loaded_at_column }}
        > {{ dbt.dateadd('hour', -1 * window_hours, 'newest_load.newest_loaded_at') }}

),

copies_per_id as (

    select
        copies.{{ column_name }},
        count(*) as copies_count,
        min(copies.{{ loaded_at_column }}) as first_loaded_at,
        max(copies.{{ loaded_at_column }}) as latest_loaded_at

    from {{ model }} as copies
    inner join recently_loaded_ids
        on copies.{{ column_name }} = recently_loaded_ids.recent_id
    group by copies.{{ column_name }}

),

redelivered_late as (

    select * from copies_per_id
    where latest_loaded_at > {{ dbt.dateadd('hour', window_hours, 'first_loaded_at') }}

)

select * from redelivered_late

{% endtest %}
