"""Unit: the runner's parent-death signal (sequence.cli.lifeline), in a child interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sequence.cli.lifeline import PARENT_PID_ENV, die_with_parent

PROBE = """
import ctypes, json, os, sys
from sequence.cli.lifeline import ParentGone, die_with_parent
env = {"SEQUENCE_RUNNER_PARENT_PID": sys.argv[1], "OTHER": "kept"}
try:
    armed = die_with_parent(env)
except ParentGone as exc:
    armed = str(exc)
sig = ctypes.c_int(-1)
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
print(json.dumps({"armed": armed, "signal": sig.value, "env": env}))
"""


def _probe(parent: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, parent], capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(out.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_arms_sigkill_on_parent_death_and_forgets_the_variable() -> None:
    got = _probe(str(os.getpid()))
    assert got == {"armed": True, "signal": 9, "env": {"OTHER": "kept"}}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_parent_that_is_already_gone_is_said() -> None:
    got = _probe("1")
    assert got["armed"] == "parent process 1 is gone"


def test_without_the_variable_nothing_happens() -> None:
    env = {"OTHER": "x"}
    assert die_with_parent(env) is False and env == {"OTHER": "x"}
    bad = {PARENT_PID_ENV: "not-a-pid"}
    assert die_with_parent(bad) is False and bad == {}
