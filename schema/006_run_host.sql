-- The machine each run ran on (RETAIL_HOST, else the host name): with the steps spread over
-- several workers (Airflow's Celery or Kubernetes executors), the history says where each ran.
alter table meta.pipeline_runs add column if not exists host text;
