"""Typed errors. Every message is one line, fit to print as-is to a user.

Errors also carry what they are about as data, set where they are raised, so callers (the
server's OpenAI error shape, retries, logs) never parse the message: ``endpoint`` (its
name), ``role`` ("policy" or "PRM"), ``url``, ``status`` (the endpoint's HTTP status) and
``param`` (the config or request field at fault, e.g. "n", "prm", "question"). ``code`` is a
stable machine-readable name per class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ratts.redact import redact


class RattsError(Exception):
    """Base class: a problem ratts can explain in one line."""

    code: ClassVar[str] = "ratts_error"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        role: str | None = None,
        url: str | None = None,
        status: int | None = None,
        param: str | None = None,
    ) -> None:
        # messages quote upstream text, which may echo a key: secrets never get this far
        super().__init__(redact(" ".join(message.split())))
        self.endpoint = endpoint
        self.role = role
        self.url = url
        self.status = status
        self.param = param

    @property
    def message(self) -> str:
        return str(self)

    def fields(self) -> dict[str, Any]:
        """The structured fields that are set (for logs and API bodies)."""
        data = {
            "endpoint": self.endpoint,
            "role": self.role,
            "url": self.url,
            "status": self.status,
            "param": self.param,
        }
        return {k: v for k, v in data.items() if v is not None}


class ConfigError(RattsError):
    """Settings, a config file or strategy parameters are invalid."""

    code: ClassVar[str] = "config_error"


class UnknownStrategyError(ConfigError):
    """A strategy name that ratts does not know."""

    code: ClassVar[str] = "unknown_strategy"


class InvalidParamsError(ConfigError):
    """Strategy parameters that cannot work (e.g. N not a multiple of M)."""

    code: ClassVar[str] = "invalid_params"


class InputError(RattsError):
    """A problem or request that cannot be solved as given (e.g. an empty question)."""

    code: ClassVar[str] = "invalid_input"


class DatasetError(InputError):
    """A dataset file that is missing or malformed."""

    code: ClassVar[str] = "dataset_error"


class EndpointError(RattsError):
    """A model endpoint failed after retries.

    ``answered_before`` is True when the endpoint had answered earlier in this process: it
    went down (an outage), rather than never being reachable (a wrong URL or port)."""

    code: ClassVar[str] = "endpoint_failed"
    answered_before: bool = False


class EndpointUnreachableError(EndpointError):
    """Could not connect to the endpoint at all."""

    code: ClassVar[str] = "endpoint_unreachable"


class EndpointTimeoutError(EndpointError):
    """The endpoint did not answer in time."""

    code: ClassVar[str] = "endpoint_timeout"


class RateLimitedError(EndpointError):
    """The endpoint kept answering 429."""

    code: ClassVar[str] = "endpoint_rate_limited"


class ServerError(EndpointError):
    """The endpoint kept answering 5xx."""

    code: ClassVar[str] = "endpoint_server_error"


class BadResponseError(EndpointError):
    """The endpoint answered, but not in the expected shape."""

    code: ClassVar[str] = "endpoint_bad_response"


class RequestRejectedError(EndpointError):
    """The endpoint answered 4xx (other than 429): the request itself was refused."""

    code: ClassVar[str] = "endpoint_rejected_request"


class StoreError(RattsError):
    """The run-log database cannot be opened, migrated or written."""

    code: ClassVar[str] = "store_error"


class RouterError(RattsError):
    """The router cannot be trained, loaded or asked (too little data, a bad artifact)."""

    code: ClassVar[str] = "router_error"
