{#
    Snapshots on Spark for any file format, Parquet included.

    dbt-spark applies a snapshot run with MERGE INTO, which only Delta, Iceberg and Hudi
    tables support, so it refuses every other file_format. This project-level
    materialization (the root project's wins over the adapter's) keeps that path for those
    three formats and, for the others, applies the same change set without MERGE:

      1. the staging view (dbt's own snapshot_staging_table: rows to insert, and the
         versions to close for 'update'/'delete') is built exactly as dbt-spark does;
      2. the complete new content of the snapshot -- every existing row, with dbt_valid_to
         set where MERGE would have set it, plus the rows MERGE would have inserted -- is
         written to a physical scratch table <snapshot>__dbt_scratch;
      3. `insert overwrite table <snapshot> select <its columns, in its order> from scratch`;
      4. the scratch table is dropped.

    The scratch table is needed because Spark refuses to overwrite a table that the same
    statement reads. Every run rewrites the whole snapshot (Parquet has no in-place update).
    Columns, strategies (timestamp, check), dbt_scd_id, snapshot_meta_column_names,
    dbt_valid_to_current and hard_deletes (ignore, invalidate) are dbt's own: the staging
    query is dbt-core's, only the MERGE is replaced. hard_deletes 'new_record' is refused:
    on Spark that staging query writes the deletion rows with every source column null
    (dbt-labs/dbt-adapters#1401; dbt-spark's MERGE path has the same bug).

    Without a file_format the snapshot is created `using parquet`, as dbt-spark documents:
    a bare CTAS in a Hive-enabled session would make a Hive text table.
#}

{% macro mediapulse_spark_snapshot_create_table_as(relation, sql, file_format) %}
    {#- spark__create_table_as with the format always stated (snapshots have no contracts) -#}
    create table {{ relation }}
    using {{ file_format }}
    {{ options_clause() }}
    {{ tblproperties_clause() }}
    {{ partition_cols(label="partitioned by") }}
    {{ clustered_cols(label="clustered by") }}
    {{ location_clause() }}
    {{ comment_clause() }}
    as
    {{ sql }}
{% endmacro %}


{% macro mediapulse_spark_snapshot_rewrite_sql(
    target, staging, scratch, target_columns, staging_columns, columns
) %}
    {#- the MERGE of spark__snapshot_merge_sql, as a select of the whole new table -#}
    {%- set staging_names = staging_columns | map(attribute='name') | map('lower') | list -%}
    {%- set dest_valid_to = 'DBT_INTERNAL_DEST.' ~ adapter.quote(columns.dbt_valid_to) -%}
    create table {{ scratch }} using parquet as
    with closures as (
        select
            {{ adapter.quote(columns.dbt_scd_id) }} as dbt_internal_scd_id,
            max({{ adapter.quote(columns.dbt_valid_to) }}) as dbt_internal_valid_to,
            count(*) as dbt_internal_matches
        from {{ staging }}
        where dbt_change_type in ('update', 'delete')
        group by {{ adapter.quote(columns.dbt_scd_id) }}
    )
    -- existing rows: "when matched and <current> and change in (update, delete) then update
    -- set dbt_valid_to"
    select
        {%- for col in target_columns %}
        {%- if col.name | lower == columns.dbt_valid_to | lower %}
        case
            when closures.dbt_internal_scd_id is null then {{ dest_valid_to }}
            -- MERGE fails when several source rows match one target row: so does this
            when closures.dbt_internal_matches > 1 then raise_error(
                'snapshot {{ target }}: several staged changes for one '
                || '{{ columns.dbt_scd_id }} (is unique_key unique?)')
            else closures.dbt_internal_valid_to
        end as {{ adapter.quote(col.name) }}
        {%- else %}
        DBT_INTERNAL_DEST.{{ adapter.quote(col.name) }}
        {%- endif %}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ target }} as DBT_INTERNAL_DEST
    left join closures
        on closures.dbt_internal_scd_id = DBT_INTERNAL_DEST.{{ adapter.quote(columns.dbt_scd_id) }}
        {% if config.get('dbt_valid_to_current') -%}
        and (
            {{ equals(dest_valid_to, config.get('dbt_valid_to_current') | trim) }}
            or {{ dest_valid_to }} is null
        )
        {%- else -%}
        and {{ dest_valid_to }} is null
        {%- endif %}

    union all

    -- new rows: "when not matched and change = insert then insert"
    select
        {%- for col in target_columns %}
        {%- if col.name | lower in staging_names %}
        DBT_INTERNAL_SOURCE.{{ adapter.quote(col.name) }}
        {%- else %}
        cast(null as {{ col.data_type }}) as {{ adapter.quote(col.name) }}
        {%- endif %}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ staging }} as DBT_INTERNAL_SOURCE
    left anti join {{ target }} as DBT_INTERNAL_DEST
        on DBT_INTERNAL_SOURCE.{{ adapter.quote(columns.dbt_scd_id) }}
        = DBT_INTERNAL_DEST.{{ adapter.quote(columns.dbt_scd_id) }}
    where DBT_INTERNAL_SOURCE.dbt_change_type = 'insert'
{% endmacro %}


{% materialization snapshot, adapter='spark' %}

  {%- set file_format = config.get('file_format') or 'parquet' -%}

  {#- Delta, Iceberg and Hudi: dbt-spark's own materialization, MERGE INTO and all. -#}
  {%- if spark_has_merge() -%}
    {{ return(dbt.materialization_snapshot_spark()) }}
  {%- endif -%}

  {%- set target_table = model.get('alias', model.get('name')) -%}
  {%- set strategy_name = config.get('strategy') -%}
  {%- set unique_key = config.get('unique_key') -%}
  {%- set grant_config = config.get('grants') -%}

  {% set target_relation_exists, target_relation = get_or_create_relation(
          database=none,
          schema=model.schema,
          identifier=target_table,
          type='table') -%}

  {% if not adapter.check_schema_exists(model.database, model.schema) %}
    {% do create_schema(model.schema) %}
  {% endif %}

  {%- if not target_relation.is_table -%}
    {% do exceptions.relation_wrong_type(target_relation, 'table') %}
  {%- endif -%}

  {%- if (config.get('hard_deletes') or '') | lower == 'new_record' -%}
    {% do exceptions.raise_compiler_error(
        "Snapshot " ~ target_relation ~ ": hard_deletes 'new_record' is not supported on Spark "
        ~ "(deletion rows would get null columns, dbt-labs/dbt-adapters#1401); "
        ~ "use 'invalidate'.") %}
  {%- endif -%}

  {%- set scratch_relation = api.Relation.create(identifier=target_table ~ '__dbt_scratch',
        schema=model.schema, database=none, type='table') -%}
  {#- A scratch table left behind may be the only full copy, if an insert overwrite failed. -#}
  {%- if load_relation(scratch_relation) is not none -%}
    {% do exceptions.raise_compiler_error(
        "Snapshot " ~ target_relation ~ ": " ~ scratch_relation
        ~ " is left from an interrupted run. "
        ~ "If " ~ target_relation ~ " is incomplete, restore it with `insert overwrite table "
        ~ target_relation ~ " select * from " ~ scratch_relation ~ "`; then drop "
        ~ scratch_relation ~ ".") %}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% set strategy_macro = strategy_dispatch(strategy_name) %}
  {% set strategy = strategy_macro(
      model, "snapshotted_data", "source_data", model['config'], target_relation_exists
  ) %}

  {% if not target_relation_exists %}

      {% set build_sql = build_snapshot_table(strategy, model['compiled_code']) %}

      {% call statement('main') %}
          {{ mediapulse_spark_snapshot_create_table_as(target_relation, build_sql, file_format) }}
      {% endcall %}

  {% else %}

      {% set columns = config.get("snapshot_table_column_names")
                       or get_snapshot_table_column_names() %}

      {{ adapter.assert_valid_snapshot_target_given_strategy(target_relation, columns, strategy) }}

      {% set staging_table = spark_build_snapshot_staging_table(strategy, sql, target_relation) %}

      {% set remove_columns = [
          'dbt_change_type', 'DBT_CHANGE_TYPE', 'dbt_unique_key', 'DBT_UNIQUE_KEY'
      ] %}
      {% if unique_key | is_list %}
          {% for key in strategy.unique_key %}
              {% do remove_columns.append('dbt_unique_key_' ~ loop.index) %}
              {% do remove_columns.append('DBT_UNIQUE_KEY_' ~ loop.index) %}
          {% endfor %}
      {% endif %}

      {% set missing_columns = adapter.get_missing_columns(staging_table, target_relation)
                                   | rejectattr('name', 'in', remove_columns)
                                   | list %}

      {% do create_columns(target_relation, missing_columns) %}

      {% set staging_columns = adapter.get_columns_in_relation(staging_table)
                                   | rejectattr('name', 'in', remove_columns)
                                   | list %}
      {% set target_columns = adapter.get_columns_in_relation(target_relation) %}

      {% call statement('build_snapshot_scratch_table') %}
          {{ mediapulse_spark_snapshot_rewrite_sql(target_relation, staging_table, scratch_relation,
                                                   target_columns, staging_columns, columns) }}
      {% endcall %}

      {% call statement('main') %}
          insert overwrite table {{ target_relation }}
          select
          {%- for col in target_columns %}
              {{ adapter.quote(col.name) }}{{ ',' if not loop.last }}
          {%- endfor %}
          from {{ scratch_relation }}
      {% endcall %}

      {% do adapter.drop_relation(scratch_relation) %}

  {% endif %}

  {% set should_revoke = should_revoke(target_relation_exists, full_refresh_mode=False) %}
  {% do apply_grants(target_relation, grant_config, should_revoke) %}

  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {{ adapter.commit() }}

  {% if staging_table is defined %}
      {% do post_snapshot(staging_table) %}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}
