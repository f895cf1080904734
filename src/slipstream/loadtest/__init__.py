"""``slipstream loadtest``: a lean load tester for OpenAI-compatible chat endpoints.

Lean enough to drive thousands of requests/s from one Python process, so it can measure slipstream itself:

- ``target``   resolves the URL and refuses anything outside loopback unless told otherwise;
- ``mix``      builds every request to bytes before the clock starts (JSONL bodies, streamed share);
- ``wire``     a hand-rolled HTTP/1.1 keep-alive connection on asyncio callbacks (status, framing, TTFT);
- ``profile``  scenarios as piecewise-linear levels, and the exact open-loop arrival schedule;
- ``drivers``  the closed loop (N users back to back) and the open loop (fixed schedule, no coordinated omission);
- ``record``   samples in flat arrays while running, exact percentiles after;
- ``breaking`` the breaking-point search (decisions without I/O, a thin loop around them);
- ``report``, ``chart``  rich table, JSON, markdown and a PNG;
- ``command``  the click command.
"""

from .breaking import BreakingPointSearch, SearchResult, Slo, Step, find_breaking_point
from .drivers import LoadPlan, RunResult, run_load
from .mix import MixError, RequestMix, read_bodies
from .profile import SCENARIOS, Profile, Stage, constant, scenario_profile
from .record import Distribution, Recorder, Summary
from .report import LoadReport, to_json, to_markdown
from .target import Target, TargetError, is_loopback_address, resolve_target

__all__ = [
    "SCENARIOS",
    "BreakingPointSearch",
    "Distribution",
    "LoadPlan",
    "LoadReport",
    "MixError",
    "Profile",
    "Recorder",
    "RequestMix",
    "RunResult",
    "SearchResult",
    "Slo",
    "Stage",
    "Step",
    "Summary",
    "Target",
    "TargetError",
    "constant",
    "find_breaking_point",
    "is_loopback_address",
    "read_bodies",
    "resolve_target",
    "run_load",
    "scenario_profile",
    "to_json",
    "to_markdown",
]
