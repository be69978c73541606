{#
    The query `dbt source freshness` runs for every source (`loaded_at_query`): the newest
    `loaded_at` that the `not_in_future` test accepts, not later than the run's start plus
    var('loaded_at_future_tolerance_hours'). With a plain `loaded_at_field` dbt takes the newest
    `loaded_at` of all, so a single row stamped a year ahead by a loader with a wrong clock
    would make the source look fresh for a year, however long the loads have stopped. The
    tolerance is the test's, so that both agree on what counts as a load: the demo data's
    appended days (stamped up to two days ahead of the clock, see dbt_project.yml) are loads to
    both, a stamp beyond it is an error to the test and no load to freshness.
#}
{% macro newest_load_not_in_future(relation, loaded_at_column='loaded_at') -%}
    select max({{ loaded_at_column }}) as newest_loaded_at
    from {{ relation }}
    where
        {{ loaded_at_column }}
        <= {{ dbt.dateadd(
            'hour',
            var('loaded_at_future_tolerance_hours') | int,
            run_started_timestamp()
        ) }}
{%- endmacro %}
