-- Gold holds every silver sale line exactly once, to the cent: fails with one row if the line
-- count or the sum of amounts differ (lines still waiting for their sale header excepted).
-- With checked_since() (macros/checked_since.sql), only the sales whose lines were loaded or
-- written since, or that the change log names since (a removed line leaves no silver row
-- behind), are compared.
{% set since = checked_since() or '-infinity' %}

with

{% if since != '-infinity' %}

touched as (

    select sale_id
    from {{ source('silver', 'sales_product') }}
    where _loaded_at >= '{{ since }}'::timestamptz
    union
    select sale_id
    from {{ source('silver', 'sales_changes') }}
    where _loaded_at >= '{{ since }}'::timestamptz
    union
    select sale_id
    from {{ ref('sales_item') }}
    where _updated_at >= '{{ since }}'::timestamptz

),

{% endif %}

silver_lines as (

    select count(*) as n_lines, coalesce(sum(lines.amount), 0) as amount
    from {{ source('silver', 'sales_product') }} as lines
    where exists (
        select from {{ source('silver', 'sales_customer') }} as headers
        where headers.id = lines.sale_id
    )
    {% if since != '-infinity' %}
    and lines.sale_id in (select sale_id from touched)
    {% endif %}

),

gold_lines as (

    select count(*) as n_lines, coalesce(sum(item_amount), 0) as amount
    from {{ ref('sales_item') }}
    {% if since != '-infinity' %}
    where sale_id in (select sale_id from touched)
    {% endif %}

)

select
    silver_lines.n_lines as silver_lines,
    gold_lines.n_lines as gold_lines,
    silver_lines.amount as silver_amount,
    gold_lines.amount as gold_amount
from silver_lines, gold_lines
where silver_lines.n_lines <> gold_lines.n_lines or silver_lines.amount <> gold_lines.amount
