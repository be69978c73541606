{% macro monitoring_slo(key) -%}
    {%- set slo = (config.get('meta') or {}).get('slo') or {} -%}
    {%- if key not in slo -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error(
                "meta.slo." ~ key ~ " is not set for " ~ model.name ~ ": the SLO targets live "
                ~ "in dbt_project.yml, under models: mediapulse: monitoring: +meta: slo"
            ) }}
        {%- endif -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(slo[key]) }}
{%- endmacro %}
