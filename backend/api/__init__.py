"""The REST API (FastAPI) at ``/api/v1``."""

from backend.api.app import create_app

__all__ = ["create_app"]
