"""Slipstream: one fast request pipeline for LLM calls, as an async SDK and an OpenAI-compatible gateway."""

from __future__ import annotations

from . import state
from .client import Completion, Slipstream
from .config import Config, ConfigError, load_config
from .errors import (
    AuthenticationError,
    InvalidRequest,
    ModelNotFound,
    NoHealthyDeployment,
    RateLimited,
    RequestTooLarge,
    SlipstreamError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .observe.track import track
from .providers import Deployment, Provider, Timeouts, register_provider
from .sync import SlipstreamSync

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Completion",
    "Config",
    "ConfigError",
    "Deployment",
    "InvalidRequest",
    "ModelNotFound",
    "NoHealthyDeployment",
    "Provider",
    "RateLimited",
    "RequestTooLarge",
    "Slipstream",
    "SlipstreamError",
    "SlipstreamSync",
    "Timeouts",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "load_config",
    "register_provider",
    "state",
    "track",
]
