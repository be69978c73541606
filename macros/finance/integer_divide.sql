{#
    Division of whole numbers that truncates toward zero and stays a whole number. Engines
    spell it differently (`//` on DuckDB, whose `/` always gives a double; `div()` on
    PostgreSQL, the `div` operator on Spark), hence one implementation per adapter. Another
    engine gets a compile error naming what to add rather than a division whose result type
    nobody checked.
#}
{% macro integer_divide(dividend, divisor) -%}
    {{ return(adapter.dispatch('integer_divide', 'mediapulse')(dividend, divisor)) }}
{%- endmacro %}

{% macro default__integer_divide(dividend, divisor) -%}
    {{ exceptions.raise_compiler_error(
        "macro integer_divide has no implementation for adapter '" ~ adapter.type()
        ~ "': add " ~ adapter.type() ~ "__integer_divide to macros/finance/integer_divide.sql"
        ~ " (whole-number division truncating toward zero) and prove it with the finance unit tests"
    ) }}
{%- endmacro %}

{% macro duckdb__integer_divide(dividend, divisor) -%}
    (({{ dividend }}) // ({{ divisor }}))
{%- endmacro %}

{#- schema-qualified: a `div(bigint, bigint)` on the search path would otherwise be preferred
    to the catalog's `div(numeric, numeric)` (docs/targets/postgresql-production.md, "Roles
    and grants") -#}
{% macro postgres__integer_divide(dividend, divisor) -%}
    pg_catalog.div({{ dividend }}, {{ divisor }})
{%- endmacro %}

{% macro spark__integer_divide(dividend, divisor) -%}
    (({{ dividend }}) div ({{ divisor }}))
{%- endmacro %}
