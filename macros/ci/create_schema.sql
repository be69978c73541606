{#
    How dbt creates a schema on PostgreSQL (dbt-postgres's `postgres__create_schema`, replaced
    here). A role that may create schemas in the database (`transformer`) creates it as dbt
    does. `ci` may not (no role a pull request runs as may create what production resolves by
    name, docs/targets/postgresql-production.md, "CI isolation"): it asks
    `mediapulse_ci.create_schema`, which creates only a CI run's schemas
    (`ci_<run id>_<attempt>[_<layer>]`), owned by `ci`, and refuses any other name with one
    line. The function comes from `mediapulse access-sql`
    (scripts/mediapulse/security/pg_access.py, CI_ADMIN_SCHEMA).
#}
{% macro postgres__create_schema(relation) -%}
    {%- if relation.database -%}
        {{ adapter.verify_database(relation.database) }}
    {%- endif -%}
    {%- set may_create = run_query(
        "select pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')"
    ).columns[0].values()[0] -%}
    {%- call statement('create_schema') -%}
        {%- if may_create %}
        create schema if not exists {{ relation.without_identifier().include(database=False) }}
        {%- else %}
        select mediapulse_ci.create_schema('{{ relation.schema | replace("'", "''") }}')
        {%- endif %}
    {%- endcall -%}
{%- endmacro %}
