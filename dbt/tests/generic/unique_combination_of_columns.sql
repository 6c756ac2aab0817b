{% test unique_combination_of_columns(model, combination_of_columns) %}
{#- No row may share all of these columns with another (a grain test). -#}
select {{ combination_of_columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}
