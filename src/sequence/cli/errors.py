"""The CLI's one error type.

Helpers raise :class:`CliError` — the HTTP client (:mod:`sequence.cli.http`)
for every failed call, with a hint that says what to do — and one place turns
it into a message and an exit code: :func:`sequence.cli.output.render_error`,
called for every :class:`CliError` a command lets through by the ``sequence``
command group (:mod:`sequence.cli.app`), and by
:func:`sequence.cli.output.fail` for one raised on the spot.
"""

from __future__ import annotations


class CliError(Exception):
    """A failure to show the user: ``message``, an optional ``hint``, the exit ``code``."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code
