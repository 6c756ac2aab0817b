"""retailctl: an hourly retail ETL, API → Bronze NDJSON → Silver Postgres → Gold dbt."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("retailctl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
