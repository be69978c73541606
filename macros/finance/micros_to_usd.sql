{#
    USD micros (millionths of a dollar, as the ad server books revenue) to USD with six
    decimals. Multiplying by a decimal literal keeps the arithmetic exact on every engine
    (dividing would give a double on some).
#}
{% macro micros_to_usd(column) -%}
    cast({{ column }} * 0.000001 as decimal(18, 6))
{%- endmacro %}
