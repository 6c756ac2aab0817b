{#
    dbt's hook for a generic test's `where`, overridden so the `checked_since` filter is written
    once: a test of an incremental model (the fact, the mart) checks only the rows written since
    checked_since() (see macros/checked_since.sql). `retailctl test --changed` (and run-all)
    pass the start of the last passing test run, so an hourly test costs in proportion to the
    new data; a plain `retailctl test` passes none and every row is checked. Tables rebuilt
    every run (the dimensions) are always checked whole. A test's own `where` config still
    applies on top.
#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set since = checked_since() -%}
    {%- if execute and since is not none and model.attached_node -%}
        {%- set tested = graph.nodes.get(model.attached_node, {}) -%}
        {%- if tested.get('config', {}).get('materialized') == 'incremental' -%}
            {%- do conditions.append("_updated_at >= '" ~ since ~ "'::timestamptz") -%}
        {%- endif -%}
    {%- endif -%}
    {%- if config.get('where') -%}
        {%- do conditions.append("(" ~ config.get('where') ~ ")") -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- do return("(select * from " ~ relation ~ " where " ~ conditions | join(" and ") ~ ") dbt_subquery") -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
