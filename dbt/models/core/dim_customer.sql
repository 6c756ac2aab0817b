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
        false as is_inferred,
        _deleted_at is not null as is_deleted,
        _deleted_at as deleted_at
    from customers

),

inferred as (

    -- bought before /customers listed them (or the API never pages that far); a delisted
    -- customer is not inferred: its silver row stays, marked deleted
    select
        buyers.value as customer_id,
        '{}'::text[] as emails,
        '{}'::text[] as phone_numbers,
        null::text as primary_email,
        true as is_inferred,
        false as is_deleted,
        null::timestamptz as deleted_at
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
