"""Slipstream's one exception tree.

Every error a caller can see is a ``SlipstreamError``. Each class maps one-to-one to an HTTP status and an
OpenAI error ``type`` at the gateway edge, so SDK users and gateway clients see the same failure::

    SlipstreamError                      500 api_error
    ├── InvalidRequest                   400 invalid_request_error   (names the field: ``messages[2].content``)
    ├── AuthenticationError              401 authentication_error
    ├── ModelNotFound                    404 not_found_error
    ├── RequestTooLarge                  413 invalid_request_error
    ├── RateLimited                      429 rate_limit_error        (``retry_after`` seconds)
    ├── NoHealthyDeployment              503 service_unavailable
    └── UpstreamError                    502 upstream_error          (the provider's message)
        ├── UpstreamStatusError          the provider answered with an error status
        ├── UpstreamConnectionError      could not reach the provider
        ├── UpstreamProtocolError        the provider's body or stream was malformed
        └── UpstreamTimeout              504 timeout                 (connect, first byte or total)

``UpstreamStatusError`` keeps the provider's status: a provider's 400/404/413/422 reaches the client with that
status (the request was at fault), a provider's 429 as 429; anything else (401/403 mean *our* key is wrong,
5xx) is a 502.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "InvalidRequest",
    "ModelNotFound",
    "NoHealthyDeployment",
    "RateLimited",
    "RequestTooLarge",
    "SlipstreamError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
]

# Provider statuses that say the request itself was at fault, passed through to the client as they are.
_CLIENT_FAULT_STATUSES = frozenset({400, 404, 413, 422})


class SlipstreamError(Exception):
    """Base of every error slipstream raises on purpose."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(SlipstreamError):
    """The request is malformed or breaks the schema; ``param`` names the field at fault."""

    status = 400
    type = "invalid_request_error"


class AuthenticationError(SlipstreamError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(SlipstreamError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"


class RequestTooLarge(SlipstreamError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(SlipstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class NoHealthyDeployment(SlipstreamError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_deployment"


class UpstreamError(SlipstreamError):
    """The provider failed; the message is the provider's own where it gave one."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, provider: str = "", **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.provider = provider


class UpstreamStatusError(UpstreamError):
    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        provider: str = "",
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        **kw: str | None,
    ) -> None:
        super().__init__(message, provider=provider, **kw)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.headers = headers or {}
        if upstream_status in _CLIENT_FAULT_STATUSES:
            self.status = upstream_status
            self.type = "invalid_request_error" if upstream_status != 404 else "not_found_error"
        elif upstream_status == 429:
            self.status = 429
            self.type = "rate_limit_error"


class UpstreamConnectionError(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
