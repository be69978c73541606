{#
    `numerator / denominator` rounded half away from zero to `scale` decimals, as
    decimal(18, scale), exactly and identically on every engine. Dividing decimals is not
    exact everywhere: DuckDB turns any division into a double, so a quotient such as
    0.3571495 could come out as 0.357149 on DuckDB and 0.357150 on PostgreSQL. Here the only
    division is of whole numbers: with n the numerator in units of 10^-scale and d the
    denominator, the rounded quotient is (2|n| + d) div 2d units, signed like n.

    The numerator must have at most `scale` decimals (so n is a whole number; every amount
    here is a decimal with six) and the denominator must be a positive whole number. A value
    too large for a bigint is an overflow error on the engines, never a wrong number.
#}
{% macro divide_rounded(numerator, denominator, scale=6) -%}
    {%- set units = "cast((" ~ numerator ~ ") * " ~ (10 ** scale)
        ~ " as " ~ dbt.type_bigint() ~ ")" -%}
    {%- set unit = "0." ~ ("0" * (scale - 1)) ~ "1" if scale > 0 else "1" -%}
    cast(
        case when {{ units }} < 0 then -1 else 1 end
        * {{ mediapulse.integer_divide(
            "2 * abs(" ~ units ~ ") + (" ~ denominator ~ ")",
            "2 * (" ~ denominator ~ ")",
        ) }}
        * {{ unit }}
        as decimal(18, {{ scale }})
    )
{%- endmacro %}
