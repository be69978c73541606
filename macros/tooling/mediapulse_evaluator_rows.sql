{#
    Prints every row of dbt-project-evaluator's fct_ tables as one JSON line, for
    `mediapulse evaluate` to read through dbt (so it works on every engine dbt supports).
    Tables not built yet are left out.
#}
{% macro mediapulse_evaluator_rows() %}
    {% if execute %}
        {% set payload = {} %}
        {% for node in graph.nodes.values()
            if node.package_name == 'dbt_project_evaluator'
            and node.resource_type == 'model'
            and node.name.startswith('fct_') %}
            {% set relation = adapter.get_relation(
                database=node.database, schema=node.schema, identifier=node.alias
            ) %}
            {% if relation is not none %}
                {% set table = run_query('select * from ' ~ relation) %}
                {% set rows = [] %}
                {% for row in table.rows %}
                    {% set record = {} %}
                    {% for column in table.column_names %}
                        {% set value = row[loop.index0] %}
                        {% do record.update({column: none if value is none else value | string}) %}
                    {% endfor %}
                    {% do rows.append(record) %}
                {% endfor %}
                {% do payload.update({node.name: rows}) %}
            {% endif %}
        {% endfor %}
        {{ print('MEDIAPULSE_EVALUATOR_ROWS ' ~ tojson(payload)) }}
    {% endif %}
{% endmacro %}
