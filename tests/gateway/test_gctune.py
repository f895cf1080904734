import os
import subprocess
import sys
from pathlib import Path

from slipstream.gateway import gctune

# Run in a child interpreter: the GC settings are process-wide and this test process must keep its own.
PROBE = """
import gc, json
from slipstream.gateway.app import create_app
before = gc.get_threshold()
create_app()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_a_worker_app_freezes_startup_objects_and_raises_the_young_threshold(tmp_path: Path):
    config = tmp_path / "slipstream.yaml"
    config.write_text(
        f"cache: {{sqlite: {{path: {tmp_path / 'cache.db'}}}}}\n"
        f"observe: {{request_log: {{path: {tmp_path / 'requests.db'}}}}}\n"
        "model_groups: {s: {deployments: [{provider: sim, model: s}]}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "SLIPSTREAM_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    import json

    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["before"] == [700, 10, 10]  # CPython's defaults until the app is built
    assert seen["after"] == [gctune.GEN0, gctune.GEN1, gctune.GEN2]
    assert seen["frozen"] > 10_000  # the modules, config and pipeline built at startup
