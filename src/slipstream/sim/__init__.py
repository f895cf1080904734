"""The simulated LLM: a deterministic, controllable upstream for offline demos, tests, load tests and benchmarks.

- ``SimOptions`` (``options``): every knob — reply length, latency distributions, faults, self-enforced limits.
- ``Simulator`` (``simulator``): decides each request (answer, limit, fault, latency) without I/O.
- ``slipstream.providers.sim.SimProvider``: the in-process provider (``provider: sim`` in a deployment).
- ``slipstream.sim.server``: an OpenAI-compatible HTTP server (``serve()``, ``SimServer``).
"""

from __future__ import annotations

from .options import FAULT_KINDS, PRESETS, SimOptionError, SimOptions
from .simulator import SimStats, Simulator

__all__ = ["FAULT_KINDS", "PRESETS", "SimOptionError", "SimOptions", "SimStats", "Simulator"]
