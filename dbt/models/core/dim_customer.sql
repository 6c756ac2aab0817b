with

customers as (

    select * from {{ source('silver', 'customers') }}

),

buyers as (

    {{ distinct_values(source('silver', 'sales_customer'), 'customer_id') }}

),

known as (

    select
        customer_id,
        emails,
        phone_numbers,
        emails[1] as primary_email,
        false as is_inferred
    from customers

),

inferred as (

    -- bought before /customers listed them (or the API never pages that far)
    select
        buyers.value as customer_id,
        '{}'::text[] as emails,
        '{}'::text[] as phone_numbers,
        null::text as primary_email,
        true as is_inferred
    from buyers
    where not exists (
        select from customers where customers.customer_id = buyers.value
    )

),

final as (

    select * from known
    union all
    select * from inferred

)

select * from final
