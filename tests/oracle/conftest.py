"""Shared fixtures for the oracle tests: the slmpack binary, per-test temp dirs, tiny models."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def slmpack_bin() -> str:
    b = os.environ.get("SLMPACK_BIN")
    if b:
        return b
    b = ROOT / "target" / "debug" / "slmpack"
    if not b.exists():
        raise RuntimeError("slmpack is not built: run `cargo build` or tests/run.sh")
    return str(b)


def run(*args, check=True, **kw):
    """Run slmpack; returns CompletedProcess with text output."""
    p = subprocess.run([slmpack_bin(), *map(str, args)], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"slmpack {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


@pytest.fixture
def slm():
    return run
