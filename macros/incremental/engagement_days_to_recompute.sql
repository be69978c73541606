{#
    Which account-days `fct_daily_engagement` recomputes: for each account with sessions that
    changed since the watermark (`changed_filter` on `sessions_relation`), every day from the
    earliest such session's day on. Shared by the model and its pre-hook, which must agree.
#}
{% macro engagement_days_to_recompute(sessions_relation, changed_filter) -%}
    select
        user_id,
        min(session_date) as recompute_from_date

    from {{ sessions_relation }}
    where {{ changed_filter }}
    group by user_id
{%- endmacro %}
