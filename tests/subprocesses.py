"""Test scripts run in a fresh Python process: for settings read at import (kernels/launch.py's
switches), for state that must not carry over (the autotuner's choices), and for kernels that may
leave the GPU unusable (an illegal address ends the process's CUDA context)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_python(script: str, env: dict | None = None, timeout: int = 300) -> str:
    """Run `script` with tests/ on the path and `env` added to the environment; its stdout. A
    failure shows the script's output."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    run = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"script failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run.stdout
