"""Generate docs/cli.md from the CLI's own --help (a test fails when it drifts).

    python scripts/gen_cli_docs.py          # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TERMINAL_WIDTH"] = "100"
os.environ["COLUMNS"] = "100"
os.environ["_TYPER_FORCE_DISABLE_TERMINAL"] = "1"
os.environ["NO_COLOR"] = "1"

import click

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

HEADER = """# CLI reference

Generated from `sequence --help` by `scripts/gen_cli_docs.py`; do not edit by
hand (`make docs` rewrites it, and a test fails when it is stale).

Every command that talks to the platform reads the API URL and key from
`$XDG_CONFIG_HOME/sequence/config.toml` (written by `sequence up` and
`sequence login`), overridden by `SEQUENCE_API_URL` / `SEQUENCE_API_KEY`.
Every command that prints data takes `--json`.
"""


def _names(cmd: click.Command, path: list[str], ctx_parent: click.Context | None) -> list[list[str]]:
    ctx = click.Context(cmd, info_name=path[-1] if path else "sequence", parent=ctx_parent)
    out = [path]
    if hasattr(cmd, "list_commands"):
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                out.extend(_names(sub, [*path, name], ctx))
    return out


def render() -> str:
    import typer.testing
    from typer.testing import CliRunner

    from sequence.cli.app import app, command

    # Render the command exactly as `sequence` runs it (with its placeholders),
    # not as Typer would build it afresh from the app.
    typer.testing._get_command = lambda _app: command()  # type: ignore[attr-defined]
    runner = CliRunner()
    root = command()
    parts = [HEADER]
    for path in _names(root, [], None):
        res = runner.invoke(app, [*path, "--help"], prog_name="sequence",
                            env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"}, terminal_width=100)
        if res.exit_code != 0:
            raise SystemExit(f"sequence {' '.join(path)} --help failed: {res.output}")
        lines = [ln.rstrip() for ln in res.output.splitlines()]
        title = " ".join(["sequence", *path])
        parts.append(f"\n## `{title}`\n\n```text\n" + "\n".join(lines).strip("\n") + "\n```\n")
    return "".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
