{#
    Everything `mediapulse codegen` needs from the warehouse, in one dbt invocation: the raw
    tables of `database` (one JSON line), dbt-codegen's `generate_source` YAML for each raw
    schema and its `generate_model_yaml` YAML for every built model of this project. Each is
    printed; the Python side parses and merges them. `schemas`, when given, are the only
    schemas read as raw (a server database also holds the schemas dbt builds).
#}
{% macro mediapulse_codegen_inputs(database, ignored_schemas=[], schemas=none) %}
    {% if execute %}
        {% set found = run_query(
            "select lower(table_schema), lower(table_name) from information_schema.tables "
            ~ "where lower(table_catalog) = lower('" ~ database ~ "') "
            ~ "order by 1, 2"
        ) %}
        {% set tables = {} %}
        {% for row in found.rows
            if row[0] not in ignored_schemas and (schemas is none or row[0] in schemas) %}
            {% do tables.setdefault(row[0], []).append(row[1]) %}
        {% endfor %}
        {{ print('MEDIAPULSE_TABLES ' ~ tojson(tables)) }}
        {% for schema, names in tables.items() %}
            {% do codegen.generate_source(
                schema_name=schema,
                database_name=database,
                table_names=names,
                generate_columns=true,
                include_data_types=true,
            ) %}
        {% endfor %}
        {% set models = [] %}
        {% for node in graph.nodes.values()
            if node.resource_type == 'model'
            and node.package_name == project_name
            and node.config.materialized != 'ephemeral' %}
            {% set relation = adapter.get_relation(
                database=node.database, schema=node.schema, identifier=node.alias
            ) %}
            {% if relation is not none %}
                {% do models.append(node.name) %}
            {% endif %}
        {% endfor %}
        {% do codegen.generate_model_yaml(model_names=models | sort, include_data_types=true) %}
    {% endif %}
{% endmacro %}
