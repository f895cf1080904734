"""Without the semantic extra, slipstream works, and turning the semantic cache on says what to install."""

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["onnxruntime"] = None  # as if the package were not installed
from slipstream.config import ConfigError, parse_config
plain = parse_config("model_groups:\\n  s:\\n    deployments: [{provider: sim, model: s}]\\n")
print("plain ok", plain.model_groups["s"].policy.semantic)
try:
    parse_config(
        "model_groups:\\n  s:\\n    semantic: {enabled: true}\\n    deployments: [{provider: sim, model: s}]\\n"
    )
except ConfigError as exc:
    print(exc)
"""


def test_enabling_semantic_without_the_extra_names_the_install_command():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert "plain ok None" in result.stdout
    assert "model_groups.s.semantic.enabled" in result.stdout
    assert "onnxruntime" in result.stdout
    assert "pip install 'slipstream[semantic]'" in result.stdout
