"""The bundled mock retail API (FastAPI): the source contract of DESIGN.md with demo data."""

from mock_api.app import DEFAULT_API_KEY, FaultConfig, MockConfig, create_app
from mock_api.data import DataConfig, RetailData
from mock_api.server import BackgroundServer

__all__ = [
    "DEFAULT_API_KEY",
    "BackgroundServer",
    "DataConfig",
    "FaultConfig",
    "MockConfig",
    "RetailData",
    "create_app",
]
