"""Running a command as its console script does (``python -m asr_kd.cli.<command>``) from this
checkout, and the one-line ``error:`` check every refused command must pass.

Usage: ``from tests.helpers.console import one_error_line, run_console``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_console(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m asr_kd.cli.<command> ARGS`` from ``cwd``, this checkout first on the path and
    ``HYDRA_FULL_ERROR`` unset."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", f"asr_kd.cli.{command}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)


def one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Assert status 2, exactly one stderr line ``error: ...`` holding each of ``expected``, and
    no traceback anywhere; return the line."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def only_hydra_leftovers(run_dir: Path) -> bool:
    """``run_dir`` exists and holds nothing but Hydra's ``.hydra/`` and ``*.log`` files."""
    return run_dir.is_dir() and all(
        p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()
    )
