{#
    ANALYZE a model's table only when PostgreSQL's autoanalyze would, with its default settings:
    never analyzed (a table dbt just created, whose index builds already counted its rows), or
    more than 50 rows plus 10 % of the table changed since it last was (the counters hold even
    where autovacuum is off). The hourly increment's plans read through indexes and estimate a
    watermark past the histogram from the index's real maximum, so they need no fresh
    statistics every hour; and ANALYZE samples up to 30,000 pages: 0.2 s on a 9M-line fact,
    more when those pages are out of cache (docs/scale.md). The counters show
    what earlier runs wrote, not this transaction: a large increment is analyzed at the next
    run. Renders to nothing when the statistics are fresh enough (dbt skips an empty hook).
#}
{% macro analyze_if_stale(relation) -%}
    {%- if execute -%}
        {%- set stale_query -%}
            select s.relid is null  -- a table this transaction created: no statistics entry yet
                or coalesce(s.last_analyze, s.last_autoanalyze) is null
                or c.reltuples < 0
                or s.n_mod_since_analyze > 50 + 0.1 * c.reltuples
            from pg_class as c
            left join pg_stat_user_tables as s on s.relid = c.oid
            where c.oid = '{{ relation.include(database=false) }}'::regclass
        {%- endset -%}
        {%- if run_query(stale_query).columns[0].values()[0] -%}
            analyze {{ relation }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
