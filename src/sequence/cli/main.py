"""The ``sequence`` entry point: answer the commonest read-only commands fast, else Typer.

Every command used to import Typer, Rich and httpx (≈ 0.2 s) before doing
anything, so ``sequence --version`` took 20× a bare interpreter start. Here
``--version`` prints from the package, and ``strategy list --json`` /
``strategy inspect NAME --json`` go through the standard library only
(:mod:`sequence.cli.fast`). Anything else — and any error on the fast path,
so messages and hints stay the full CLI's — runs the Typer app
(:mod:`sequence.cli.app`).
"""

from __future__ import annotations

import sys
from typing import Any


def run() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        from sequence import __version__

        print(f"sequence {__version__}")
        return
    from sequence.cli import fast

    if fast.answer(argv):
        return
    from sequence.cli.app import run as run_app

    run_app()


def __getattr__(name: str) -> Any:  # `from sequence.cli.main import app, command` keeps working
    if name in ("app", "command"):
        from sequence.cli import app as app_module

        return getattr(app_module, name)
    raise AttributeError(name)


if __name__ == "__main__":
    run()
