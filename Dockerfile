# syntax=docker/dockerfile:1
# Build: docker build -t retailctl .   Run: docker run --env-file .env -v retail-data:/data retailctl
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY retailctl ./retailctl
COPY mock_api ./mock_api
COPY schema ./schema
COPY dbt ./dbt
RUN python -m venv /opt/retailctl \
    && /opt/retailctl/bin/pip install --no-cache-dir --upgrade pip==25.3 \
    && /opt/retailctl/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --gid 10001 retail \
    && useradd --create-home --uid 10001 --gid 10001 retail \
    && mkdir /data \
    && chown retail:retail /data
COPY --from=build /opt/retailctl /opt/retailctl
ENV PATH="/opt/retailctl/bin:${PATH}" \
    RETAIL_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["retailctl"]
CMD ["run-all"]
