"""The OpenAI-compatible HTTP server (``ratts serve``) over one Orchestrator."""

from ratts.server.app import create_app
from ratts.serving import ServerThread

__all__ = ["ServerThread", "create_app"]
