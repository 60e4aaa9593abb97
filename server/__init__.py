"""An OpenAI-compatible HTTP server over course_lib's serving engine (python -m server)."""

from server.app import create_app

__all__ = ["create_app"]
