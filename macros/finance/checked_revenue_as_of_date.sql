{#
    The value of var('revenue_as_of_date'), checked: none when unset, else the day as
    'YYYY-MM-DD'. A value that is not a calendar day stops the run with one line naming the
    setting and the fix, instead of a cast error inside a model. The model passes the var in
    (rather than this macro reading it) so that a unit test's `overrides: vars:` reaches it.
#}
{% macro checked_revenue_as_of_date(value) -%}
    {%- if value is none or (value | string | trim) == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set text = value | string | trim -%}
    {%- set problem = "var revenue_as_of_date is '" ~ text ~ "', not a day: set it to a date as"
        ~ " YYYY-MM-DD (e.g. --vars '{revenue_as_of_date: 2026-03-31}'), or to null to"
        ~ " recognise revenue through the latest billing sync" -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', text) -%}
        {{ exceptions.raise_compiler_error(problem) }}
    {%- endif -%}
    {%- set year, month, day = text[0:4] | int, text[5:7] | int, text[8:10] | int -%}
    {%- if month < 1 or month > 12 or day < 1 -%}
        {{ exceptions.raise_compiler_error(problem) }}
    {%- endif -%}
    {%- set next_month = modules.datetime.date(year + month // 12, month % 12 + 1, 1) -%}
    {%- if day > (next_month - modules.datetime.timedelta(days=1)).day -%}
        {{ exceptions.raise_compiler_error(problem) }}
    {%- endif -%}
    {{ return(text) }}
{%- endmacro %}
