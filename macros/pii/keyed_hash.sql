{#
    Personal data is hashed with a secret key, so a dictionary of likely values cannot reverse
    the hash: sha256 of the key, a '|' and the value, as lower-case hex, the same digest on
    every engine. The key comes from the environment variable MEDIAPULSE_PII_HASH_KEY (the
    `mediapulse` CLI supplies it, see scripts/mediapulse/dbt/pii.py). It never appears in a
    model's compiled SQL, which lands in the published manifest: `set_pii_hash_key`, a
    pre-hook of each model that hashes, puts it in a session variable the hash reads.
    Such a model is a table, so that reading it never needs the key.
#}
{% macro set_pii_hash_key() -%}
    {#- Read only when the hook runs, not while dbt parses: what parsing reads is stored in
        target/partial_parse.msgpack. -#}
    {%- set key = env_var('MEDIAPULSE_PII_HASH_KEY', '') if execute else '' -%}
    {%- if execute and not key -%}
        {{ exceptions.raise_compiler_error(
            "environment variable MEDIAPULSE_PII_HASH_KEY is not set: personal data is hashed "
            ~ "with this secret key; set it (the `mediapulse` CLI generates one for DuckDB targets)"
        ) }}
    {%- endif -%}
    {{ return(adapter.dispatch('set_pii_hash_key', 'mediapulse')(key | replace("'", "''"))) }}
{%- endmacro %}

{% macro default__set_pii_hash_key(quoted_key) -%}
    {{ exceptions.raise_compiler_error(
        "macro set_pii_hash_key has no implementation for adapter '" ~ adapter.type()
        ~ "': add " ~ adapter.type() ~ "__set_pii_hash_key and "
        ~ adapter.type() ~ "__keyed_hash to macros/pii/keyed_hash.sql"
    ) }}
{%- endmacro %}

{% macro duckdb__set_pii_hash_key(quoted_key) -%}
    set variable mediapulse_pii_hash_key = '{{ quoted_key }}'
{%- endmacro %}

{#- PostgreSQL: built-ins schema-qualified (and the search path pinned, profiles.yml), so no
    function or operator another role created can take their place and be handed the key and
    every address (docs/targets/postgresql-production.md, "Roles and grants"). `||` through
    OPERATOR(pg_catalog.||): the same operator as before, so the same digest, and null still
    hashes to null. -#}
{% macro postgres__set_pii_hash_key(quoted_key) -%}
    select pg_catalog.set_config('mediapulse.pii_hash_key', '{{ quoted_key }}', false)
{%- endmacro %}

{% macro keyed_hash(expression) -%}
    {{ return(adapter.dispatch('keyed_hash', 'mediapulse')(expression)) }}
{%- endmacro %}

{#- Spark SQL has no session variables before 4.0: the key is a session setting, which the
    hash reads through Spark's `${...}` substitution when the statement is parsed (the
    compiled SQL holds the placeholder, not the key). -#}
{% macro spark__set_pii_hash_key(quoted_key) -%}
    set mediapulse.pii_hash_key = {{ quoted_key | replace("''", "'") }}
{%- endmacro %}

{% macro default__keyed_hash(expression) -%}
    {{ exceptions.raise_compiler_error(
        "macro keyed_hash has no implementation for adapter '" ~ adapter.type()
        ~ "': add " ~ adapter.type() ~ "__keyed_hash to macros/pii/keyed_hash.sql"
    ) }}
{%- endmacro %}

{% macro duckdb__keyed_hash(expression) -%}
    sha256(getvariable('mediapulse_pii_hash_key') || '|' || {{ expression }})
{%- endmacro %}

{% macro postgres__keyed_hash(expression) -%}
    pg_catalog.encode(
        pg_catalog.sha256(
            pg_catalog.convert_to(
                pg_catalog.current_setting('mediapulse.pii_hash_key')
                operator(pg_catalog.||) '|' operator(pg_catalog.||) ({{ expression }}),
                'UTF8'
            )
        ),
        'hex'
    )
{%- endmacro %}

{% macro spark__keyed_hash(expression) -%}
    sha2('${mediapulse.pii_hash_key}' || '|' || {{ expression }}, 256)
{%- endmacro %}
