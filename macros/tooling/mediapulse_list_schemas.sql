{#
    Prints the schemas of `database` as one JSON line, for `mediapulse codegen` to find raw
    schemas that no source declares yet.
#}
{% macro mediapulse_list_schemas(database) %}
    {% if execute %}
        {% set schemas = adapter.list_schemas(database) %}
        {{ print('MEDIAPULSE_SCHEMAS ' ~ tojson(schemas | map('lower') | list | sort)) }}
    {% endif %}
{% endmacro %}
