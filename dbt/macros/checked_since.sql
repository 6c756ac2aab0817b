{#
    The start of the last passing test run when only the rows written since are to be tested,
    else none (every row): var('checked_since') in a plain dbt run, the environment variable
    RETAIL_DBT_CHECKED_SINCE from retailctl (empty: every row). Read only when a test executes:
    retailctl passes an environment variable rather than a --vars because a change of
    command-line vars makes dbt re-parse the whole project, and an environment variable read at
    parse time would make it re-parse every test it changes.
#}
{% macro checked_since() -%}
    {%- if execute -%}
        {{ return(var('checked_since', none) or env_var('RETAIL_DBT_CHECKED_SINCE', '') or none) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}
