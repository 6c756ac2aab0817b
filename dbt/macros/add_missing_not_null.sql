{#
    The NOT NULL constraints of an incremental model's contract, on a table built before the
    contract had them. dbt writes a contract's constraints only when it creates the table; an
    incremental model keeps its table across runs, so a fact or mart built by an older
    retailctl would otherwise never get them (and its not_null data tests are gone). One
    catalog query per run; when columns lack the constraint, one ALTER TABLE sets them all
    (a single scan of the table, once). Renders to nothing when every constraint is there.
#}
{% macro add_missing_not_null(relation) -%}
    {%- if execute -%}
        {%- set wanted = [] -%}
        {%- for column in model.columns.values() -%}
            {%- if column.constraints | selectattr('type', 'equalto', 'not_null') | list -%}
                {%- do wanted.append(column.name) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set missing_query -%}
            select attname from pg_attribute
            where attrelid = '{{ relation.include(database=false) }}'::regclass
              and not attnotnull and not attisdropped
              and attname in ({%- for name in wanted -%}{{ "'" ~ name ~ "'" }}{{ ", " if not loop.last }}{%- endfor -%})
            order by attnum
        {%- endset -%}
        {%- set missing = run_query(missing_query).columns[0].values() if wanted else [] -%}
        {%- if missing -%}
            alter table {{ relation }}
            {%- for name in missing %}
                alter column {{ adapter.quote(name) }} set not null{{ "," if not loop.last }}
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
