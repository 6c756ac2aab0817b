{#
    The latest value of `column` already in this incremental model, as a literal: the planner
    then sees a constant and reads only the new rows through the _loaded_at index.
#}
{% macro watermark(column) -%}
    {%- if execute and is_incremental() -%}
        {%- set result = run_query(
            "select coalesce(max(" ~ column ~ "), '-infinity'::timestamptz)::text from " ~ this
        ) -%}
        '{{ result.columns[0].values()[0] }}'::timestamptz
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}
