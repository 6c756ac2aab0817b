{% test at_least(model, column_name, minimum) %}
{#- Every value is at least `minimum` (null counts as a failure). -#}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is null or {{ column_name }} < {{ minimum }}
{% endtest %}
