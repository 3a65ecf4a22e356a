"""In-sandbox supervisor: starts the strategy and reports its exact wait status.

This file is not imported by the runner: its source is passed to the
*runtime* interpreter with ``python -I -S -c <source>`` (so it must stay
standard-library-only and compatible with old Pythons).  Usage::

    python -I -S -c SRC <status-fd> <parent-pid|-> -- <argv of the strategy…>

Why it exists: bubblewrap reports a child killed by signal N as exit code
128+N, which cannot be told apart from ``sys.exit(128+N)``.  The supervisor
is the strategy's parent, so it sees the real wait status and writes one line
to ``status-fd`` — ``exit <code>``, ``signal <num>`` or ``error <message>`` —
then exits with the same code bubblewrap would have used.

It ignores SIGTERM/SIGINT/SIGHUP itself (the runner signals the strategy's
processes directly), closes every inherited descriptor but 0-2 before the
strategy starts, restores default signal dispositions in the child, and — when
given the runner's pid (unsandboxed runs) — asks the kernel to SIGKILL it and
the strategy if the runner dies.
"""

from __future__ import annotations

import os
import signal
import sys

_FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP")
_RESET = ("SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "SIGXFSZ", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _pdeathsig() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _close_fds(keep: int) -> None:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(i) for i in range(3, 1024)]
    for name in names:
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def main(argv: list[str]) -> None:
    status_fd = int(argv[0])
    parent = argv[1]
    cmd = argv[3:] if len(argv) > 2 and argv[2] == "--" else []
    for name in _FORWARDED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if parent != "-":
        _pdeathsig()
        if os.getppid() != int(parent):  # the runner died before prctl
            os._exit(137)
    _close_fds(status_fd)
    os.set_inheritable(status_fd, False)

    def report(text: str) -> None:
        try:
            os.write(status_fd, (text + "\n").encode())
        except OSError:
            pass

    if not cmd:
        report("error no command given")
        os._exit(127)
    pid = os.fork()
    if pid == 0:
        try:
            for name in _RESET:
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            if parent != "-":
                _pdeathsig()
            os.execv(cmd[0], cmd)
        except BaseException as exc:
            try:
                os.write(2, f"sequence: cannot start {cmd[0]}: {exc}\n".encode())
            except OSError:
                pass
            report(f"error cannot start {cmd[0]}: {exc}")
        os._exit(127)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        report(f"signal {sig}")
        os._exit(128 + sig)
    code = os.WEXITSTATUS(status)
    report(f"exit {code}")
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
