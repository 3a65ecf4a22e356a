"""Errors of the stream hub.

One root::

    StreamError          every error from sequence.stream
    └── ChannelError     a channel that cannot be subscribed (unknown kind, unknown
                         symbol, not the caller's, …): answered on the socket as
                         ``{"type": "error", "code", "message", "channels"}``,
                         never as an HTTP status; ``code`` says which
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every error raised by :mod:`sequence.stream`."""


class ChannelError(StreamError):
    """A stream channel that cannot be subscribed; ``code`` is sent to the client."""

    def __init__(self, channel: str, message: str, *, code: str = "bad_channel") -> None:
        super().__init__(message)
        self.channel = channel
        self.message = message
        self.code = code
