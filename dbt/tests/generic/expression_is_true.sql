{% test expression_is_true(model, expression) %}
{#- Every row satisfies `expression` (a SQL boolean over the model's columns). -#}
select *
from {{ model }}
where not ({{ expression }})
{% endtest %}
