{#
    Where an incremental run of a sessionised model must start recomputing each viewing key
    (user, title, device) that received events since the watermark: the start of the session
    that the key's earliest new event joins, or that event itself when it joins none.

    Exact: new events are never earlier than that start, so every event before it keeps its
    neighbours, its session and its playback; the event at that start still follows a gap
    longer than the inactivity limit, so recomputing from it reproduces the full refresh.
    The session the earliest new event joins is the one of the latest held event at most one
    inactivity gap before it (session starts only grow along a key, so the maximum is that
    event's); a minute of margin covers sub-second timestamps, and a wider window only makes
    the recompute start at an earlier session start, which is as exact.

    `newly_loaded_events` names the events loaded since the watermark (a CTE, or a subquery
    with its alias); `held_events` the model itself. `held_since` (SQL) may bound the scan of
    `held_events` from below: see `incremental_recompute_floor`.
#}
{% macro sessions_to_recompute(newly_loaded_events, held_events, held_since=none) -%}
    select
        touched.user_id,
        touched.content_id,
        touched.device_type,
        coalesce(
            max(held.session_start_at), min(touched.earliest_new_event_at)
        ) as recompute_from_at

    from (

        select
            user_id,
            content_id,
            device_type,
            min(event_at) as earliest_new_event_at

        from {{ newly_loaded_events }}
        group by
            user_id,
            content_id,
            device_type

    ) as touched
    left join {{ held_events }} as held
        on
            touched.user_id = held.user_id
            and touched.content_id = held.content_id
            and touched.device_type = held.device_type
            and held.event_at <= touched.earliest_new_event_at
            and held.event_at >= {{ dbt.dateadd(
                'minute',
                -1 * (var('session_inactivity_minutes') | int + 1),
                'touched.earliest_new_event_at'
            ) }}
            {%- if held_since is not none %}
            and held.event_at >= {{ held_since }}
            {%- endif %}

    group by
        touched.user_id,
        touched.content_id,
        touched.device_type
{%- endmacro %}


{#
    The earliest recompute start of any viewing key (`sessions_to_recompute`), read before the
    model runs and returned as a timestamp literal (SQL), so that the model's scans of the
    event history carry a constant lower bound on `event_at` that engines prune storage on
    (DuckDB's zone maps skip every row group loaded before it). None when the model is not
    incremental or nothing was loaded since the watermark.

    Two small queries: the earliest newly loaded event (a scan pruned by the watermark), then
    the recompute starts, reading only the held events from one inactivity gap before it.
    A macro of its own so that unit tests can replace it (`overrides: macros:`), as with
    `incremental_watermark`: a unit test's `this` cannot be queried before the model runs.
#}
{% macro incremental_recompute_floor(events_relation, loaded_filter) -%}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set earliest_query -%}
        select min(event_at) as earliest_new_event_at
        from {{ events_relation }}
        where {{ loaded_filter }}
    {%- endset -%}
    {%- set earliest = run_query(earliest_query).columns[0].values()[0] -%}
    {%- if earliest is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set held_since = dbt.dateadd(
        'minute',
        -1 * (var('session_inactivity_minutes') | int + 1),
        "cast('" ~ earliest ~ "' as " ~ dbt.type_timestamp() ~ ")"
    ) -%}
    {%- set floor_query -%}
        select min(recompute_from_at) as recompute_floor
        from (
            {{ sessions_to_recompute(
                '(select * from ' ~ events_relation ~ ' where ' ~ loaded_filter
                    ~ ') as newly_loaded',
                this,
                held_since
            ) }}
        ) as recompute_starts
    {%- endset -%}
    {%- set recompute_floor = run_query(floor_query).columns[0].values()[0] -%}
    {{ return("cast('" ~ recompute_floor ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}
