"""Typed errors. Every message is one line, fit to print as-is to a user."""

from __future__ import annotations

from ratts.redact import redact


class RattsError(Exception):
    """Base class: a problem ratts can explain in one line."""

    def __init__(self, message: str) -> None:
        # messages quote upstream text, which may echo a key: secrets never get this far
        super().__init__(redact(" ".join(message.split())))


class ConfigError(RattsError):
    """Settings, a config file or strategy parameters are invalid."""


class UnknownStrategyError(ConfigError):
    """A strategy name that ratts does not know."""


class InvalidParamsError(ConfigError):
    """Strategy parameters that cannot work (e.g. N not a multiple of M)."""


class InputError(RattsError):
    """A problem or request that cannot be solved as given (e.g. an empty question)."""


class DatasetError(InputError):
    """A dataset file that is missing or malformed."""


class EndpointError(RattsError):
    """A model endpoint failed after retries."""


class EndpointUnreachableError(EndpointError):
    """Could not connect to the endpoint at all."""


class EndpointTimeoutError(EndpointError):
    """The endpoint did not answer in time."""


class RateLimitedError(EndpointError):
    """The endpoint kept answering 429."""


class ServerError(EndpointError):
    """The endpoint kept answering 5xx."""


class BadResponseError(EndpointError):
    """The endpoint answered, but not in the expected shape."""


class StoreError(RattsError):
    """The run-log database cannot be opened, migrated or written."""


class RouterError(RattsError):
    """The router cannot be trained, loaded or asked (too little data, a bad artifact)."""
