"""Polymarket's signing libraries (py_ecc, under eth_account) raise Python's recursion limit to
100,000 when imported. In the coordinator that turned a hostile, deeply nested JSON body into a
C stack overflow — a crash of the whole process instead of a 400. Making a Polymarket order
adapter (the only way the coordinator imports them) must leave the limit as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_making_a_polymarket_adapter_leaves_the_recursion_limit_alone() -> None:
    # A fresh interpreter: in this one the libraries may be imported already.
    code = textwrap.dedent("""
        import sys
        before = sys.getrecursionlimit()
        from sequence.execution.venues import OrderConfig, order_venue
        order_venue({"private_key": "0x" + "11" * 32}, OrderConfig("polymarket", "http://127.0.0.1:9"))
        import py_ecc  # really imported: its side effect happened
        assert sys.getrecursionlimit() == before, (before, sys.getrecursionlimit())
        # And what it protects: deep JSON is an error, not a crash.
        import json
        try:
            json.loads("[" * 100_000 + "]" * 100_000)
        except RecursionError:
            print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


def test_without_the_guard_the_same_json_would_crash_the_process() -> None:
    """The attack is real: with py_ecc's limit, the parser overflows the C stack (the process dies by
    a signal). Shows the guard above guards something."""
    code = "import py_ecc, json; json.loads('[' * 100_000 + ']' * 100_000); print('survived')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode < 0 and "survived" not in r.stdout, (r.returncode, r.stdout)  # killed by a signal
