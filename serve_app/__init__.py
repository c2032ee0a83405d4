"""san-serve: a local web page and HTTP API for upscaling and label-to-image synthesis (``create_app``)."""

from .app import create_app
from .config import ServeSettings

__all__ = ["ServeSettings", "create_app"]
