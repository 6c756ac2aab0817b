{#
    The distinct values of an indexed column, read as a loose index scan (one index probe per
    distinct value): its cost follows the number of products or customers, not of sales.
#}
{% macro distinct_values(relation, column) -%}
    with recursive walk as (
        (select {{ column }} as value from {{ relation }} order by {{ column }} limit 1)
        union all
        select (
            select {{ column }} from {{ relation }}
            where {{ column }} > walk.value
            order by {{ column }} limit 1
        )
        from walk
        where walk.value is not null
    )
    select value from walk where value is not null
{%- endmacro %}
