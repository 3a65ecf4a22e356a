"""In-sandbox supervisor: builds the workspace, starts the strategy, reports its exit.

This file is not imported by the runner: its source is passed to the
*runtime* interpreter with ``python -I -S -c <source>`` (so it must stay
standard-library-only, import as little as possible — it is on the deploy
latency path — and run on old Pythons).  Usage::

    python -I -S -c SRC [options] -- <argv of the strategy…>

    --status FD        write the exit status here (one line per fact, below)
    --parent PID|-     unsandboxed: die with the runner (PR_SET_PDEATHSIG)
    --artifact FD      a tar.gz to unpack into --workspace (sandboxed runs)
    --manifest FD      bytes to write to <workspace>/.sequence/manifest.json
    --workspace DIR    the working directory (default: the current one)
    --entrypoint REL   must be a regular file inside the workspace
    --max-members N    archive limits: members, and decompressed tar bytes
    --max-bytes N
    --ctrl FD          a unix socket to the runner: the listening sockets are
                       handed over it (SCM_RIGHTS), see --listen
    --listen NAME:PORT bind 127.0.0.1:PORT in the run's network namespace and
                       give the listening socket to the runner, which serves it
                       (the API forwarder, the egress proxy)
    --quota BYTES      the workspace quota: checked every 2 s; a breach stops
                       the strategy
    --rlimit NAME=N    lower a resource limit (soft and hard) to N: core,
                       nofile, data (repeatable)
    --lease FD         the run's fencing deadline, from the runner: lines of a
                       CLOCK_MONOTONIC time (seconds), each later than the last;
                       past the last one (or at EOF) the strategy is killed —
                       a runner that is frozen (SIGSTOP, a debugger, a stalled
                       machine) cannot fence its runs itself
    --go FD            wait for the byte ``g`` here before doing anything else:
                       the runner sends it once the run's processes are in its
                       cgroup (it moves them while this interpreter starts);
                       anything else, or EOF, and the strategy never starts

Inside bubblewrap it is **pid 1** of the run's PID namespace (``--as-pid-1``):
it reaps every orphan, and when the strategy (its child) exits it exits too,
which makes the kernel kill whatever the strategy left behind.  It marks
itself non-dumpable first, so the strategy (same uid) can neither trace it
nor open its file descriptors through ``/proc/1/fd`` — the status line cannot
be forged.  Signals from inside the namespace cannot kill pid 1.

Status lines (the runner reads them after the exit)::

    exit <code> | signal <num>       the strategy's exact wait status
    error <message>                  it could not be started (the reason)
    quota <used> <limit>             the workspace quota was exceeded
    fenced <seconds>                 killed: no lease renewal came in time (late by seconds)
    workspace <used> <size>          bytes in use on /workspace at the end

Why a supervisor at all: bubblewrap reports a child killed by signal N as
exit code 128+N, which cannot be told apart from ``sys.exit(128+N)``.
"""

from __future__ import annotations

import os
import sys
import zlib

TYPE_CHECKING = False  # typing costs ~8 ms of imports on the deploy path
if TYPE_CHECKING:
    from typing import Any

_SIGNALS_IGNORED = ("SIGTERM", "SIGINT", "SIGHUP")
_SIGNALS_RESET = (
    "SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "SIGXFSZ", "SIGQUIT", "SIGUSR1", "SIGUSR2",
)
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_CHUNK = 1 << 20


class Refused(Exception):
    """The strategy cannot be started; the text is the reason."""


def _prctl(option: int, arg: int) -> int:
    try:
        import _ctypes

        fn = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")  # type: ignore[arg-type]
        return int(_ctypes.call_function(fn, (option, arg, 0, 0, 0)))
    except Exception:
        try:
            import ctypes

            return int(ctypes.CDLL(None).prctl(option, arg, 0, 0, 0))
        except Exception:
            return -1


def _parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"listen": [], "rlimit": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return opts, argv[i + 1:]
        if not a.startswith("--") or i + 1 >= len(argv):
            raise Refused("supervisor: bad arguments")
        key, val = a[2:], argv[i + 1]
        if key in ("listen", "rlimit"):
            opts[key].append(val)
        else:
            opts[key] = val
        i += 2
    return opts, []


# -- the workspace: a minimal, strict tar.gz reader ---------------------------
# (tarfile costs ~11 ms of imports; the format is simple.  Only regular files,
# directories and symlinks that stay inside; the coordinator checked the same
# rules at upload, this is the second line.)


class _Stream:
    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.z = zlib.decompressobj(31)  # gzip wrapper
        self.buf = bytearray()
        self.total = 0
        self.max = max_bytes
        self.eof = False

    def _more(self) -> None:
        if self.z.unconsumed_tail:
            data = self.z.decompress(self.z.unconsumed_tail, _CHUNK)
        else:
            raw = os.read(self.fd, 1 << 16)
            if not raw:
                self.eof = True
                data = self.z.flush()
            else:
                data = self.z.decompress(raw, _CHUNK)
        self.total += len(data)
        if self.total > self.max:
            raise Refused(f"the artifact expands to more than {self.max} bytes")
        self.buf += data

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and not self.eof:
            self._more()
        if len(self.buf) < n:
            raise Refused("the artifact is truncated")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def copy(self, n: int, out_fd: int) -> None:
        while n > 0:
            if not self.buf:
                if self.eof:
                    raise Refused("the artifact is truncated")
                self._more()
                continue
            k = min(n, len(self.buf))
            mv = memoryview(bytes(self.buf[:k]))
            del self.buf[:k]
            while mv:
                mv = mv[os.write(out_fd, mv):]
            n -= k


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for big values
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _str(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    while data:
        sp = data.find(b" ")
        if sp <= 0:
            break
        length = int(data[:sp])
        rec = data[sp + 1:length - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode()] = v.decode("utf-8", "surrogateescape")
        data = data[length:]
    return out


def _rel(name: str) -> list[str]:
    if "\0" in name or name.startswith("/"):
        raise Refused(f"archive member {name!r}: absolute or invalid path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"archive member {name!r}: '..' components are not allowed")
    return parts


def _link_ok(parts: list[str], target: str) -> bool:
    if not target or target.startswith("/") or "\0" in target:
        return False
    depth = len(parts) - 1
    for p in target.split("/"):
        if p in ("", "."):
            continue
        depth += -1 if p == ".." else 1
        if depth < 0:
            return False
    return True


def _mkdirs(root: str, parts: list[str]) -> None:
    cur = root
    for p in parts:
        cur = cur + "/" + p
        try:
            os.mkdir(cur, 0o755)
        except FileExistsError:
            if os.path.islink(cur) or not os.path.isdir(cur):
                raise Refused(f"archive path {'/'.join(parts)!r}: {p!r} is not a directory") from None


def unpack(fd: int, root: str, max_members: int, max_bytes: int) -> int:
    """Unpack the tar.gz read from *fd* into *root*; returns the member count."""
    s = _Stream(fd, max_bytes)
    members = 0
    pax: dict[str, str] = {}
    longname: str | None = None
    longlink: str | None = None
    while True:
        hdr = s.read(512)
        if hdr == b"\0" * 512:
            return members
        kind = hdr[156:157]
        size = _num(hdr[124:136])
        if kind in (b"x", b"g", b"L", b"K"):
            data = s.read((size + 511) & ~511)[:size]
            if kind == b"x":
                pax = _pax(data)
            elif kind == b"L":
                longname = _str(data)
            elif kind == b"K":
                longlink = _str(data)
            continue
        members += 1
        if members > max_members:
            raise Refused(f"the artifact has more than {max_members} members")
        name = _str(hdr[0:100])
        if hdr[257:262] == b"ustar" and hdr[345:500].strip(b"\0"):
            name = _str(hdr[345:500]) + "/" + name
        name = pax.get("path") or longname or name
        link = pax.get("linkpath") or longlink or _str(hdr[157:257])
        size = int(pax.get("size", size))
        pax, longname, longlink = {}, None, None
        parts = _rel(name)
        skip = not parts or parts[0] == ".sequence"  # reserved for the platform
        pad = (size + 511) & ~511
        if kind in (b"0", b"\0", b"7"):
            if skip:
                s.read(pad)
                continue
            _mkdirs(root, parts[:-1])
            path = root + "/" + "/".join(parts)
            if os.path.islink(path):
                raise Refused(f"archive member {name!r}: would replace a symlink")
            if os.path.isfile(path):
                os.unlink(path)  # a later duplicate wins, as tar does
            mode = 0o755 if _num(hdr[100:108]) & 0o100 else 0o644
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            try:
                os.fchmod(out, mode)
                s.copy(size, out)
            finally:
                os.close(out)
            s.read(pad - size)
        elif kind == b"5":
            if not skip:
                _mkdirs(root, parts)
            s.read(pad)
        elif kind == b"2":
            if skip:
                continue
            if not _link_ok(parts, link):
                raise Refused(f"archive member {name!r}: symlink target {link!r} leaves the workspace")
            _mkdirs(root, parts[:-1])
            os.symlink(link, root + "/" + "/".join(parts))
            s.read(pad)
        else:
            what = {b"1": "hard link", b"3": "device", b"4": "device", b"6": "FIFO"}.get(kind, "special")
            raise Refused(f"archive member {name!r}: {what} entries are not allowed")


def _usage(path: str) -> tuple[int, int] | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


# -- network: listening sockets for the runner --------------------------------


def _hand_over_listeners(ctrl_fd: int, specs: list[str]) -> None:
    import _socket

    fds: list[Any] = []
    names: list[str] = []
    for spec in specs:
        name, _, port = spec.partition(":")
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
        s.listen(1024)
        fds.append(s)
        names.append(name)
    ctrl = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, ctrl_fd)
    try:
        data = b"".join(s.fileno().to_bytes(4, sys.byteorder, signed=True) for s in fds)
        ctrl.sendmsg([",".join(names).encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)])
    finally:
        ctrl.close()
        for s in fds:
            s.close()


def _lower_limits(specs: list[str]) -> None:
    import resource

    for spec in specs:
        name, _, value = spec.partition("=")
        res = getattr(resource, "RLIMIT_" + name.upper())
        want = int(value)
        _soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        resource.setrlimit(res, (want, want))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)  # SIGKILL (the _signal module is imported late: the deploy path)
    except OSError:
        pass


def _close_fds(keep: set[int]) -> None:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(i) for i in range(3, 1024)]
    for name in names:
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def main(argv: list[str]) -> None:
    import _signal

    _prctl(_PR_SET_DUMPABLE, 0)  # first: nothing of ours may be traced or opened via /proc
    os.umask(0o022)  # the runner's umask (077) is none of the strategy's business
    try:
        opts, cmd = _parse(argv)
    except Refused as exc:
        os.write(2, f"sequence: {exc}\n".encode())
        os._exit(127)
    status_fd = int(opts.get("status", "-1"))

    def report(text: str) -> None:
        try:
            os.write(status_fd, (text + "\n").encode())
        except OSError:
            pass

    for name in _SIGNALS_IGNORED:
        _signal.signal(getattr(_signal, name), _signal.SIG_IGN)
    # A stop (the runner's SIGTERM) that comes while the workspace is prepared found no strategy
    # to signal, and the stop waited out its whole timeout: it is remembered, and the strategy
    # is then not started (or, in the instant around the fork, passed the SIGTERM).
    stop_asked: list[bool] = []
    _signal.signal(_signal.SIGTERM, lambda _n, _f: stop_asked.append(True))
    parent = opts.get("parent", "-")
    if parent != "-":
        _prctl(_PR_SET_PDEATHSIG, _signal.SIGKILL)
        if os.getppid() != int(parent):  # the runner died before prctl
            os._exit(137)
    if "go" in opts:  # confined (memory, pids) before the artifact is unpacked or anything runs
        go_fd = int(opts["go"])
        try:
            go = os.read(go_fd, 1)
        except OSError:
            go = b""
        os.close(go_fd)
        if go != b"g":
            msg = "the runner could not confine the run (cgroup); it was not started"
            os.write(2, f"sequence: {msg}\n".encode())
            report(f"error {msg}")
            os._exit(127)
    workspace = opts.get("workspace") or os.getcwd()
    quota = int(opts.get("quota", "0"))
    try:
        if not cmd:
            raise Refused("no command given")
        if "artifact" in opts:
            fd = int(opts["artifact"])
            unpack(fd, workspace, int(opts.get("max-members", "10000")),
                   int(opts.get("max-bytes", str(512 << 20))))
            os.close(fd)
        if "manifest" in opts:
            fd = int(opts["manifest"])
            data = b""
            while True:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    break
                data += chunk
            os.close(fd)
            _mkdirs(workspace, [".sequence"])
            with open(workspace + "/.sequence/manifest.json", "wb") as f:
                f.write(data)
        entry = opts.get("entrypoint")
        if entry is not None:
            path = os.path.realpath(workspace + "/" + entry)
            if not path.startswith(os.path.realpath(workspace) + "/") or not os.path.isfile(path):
                raise Refused(f"entrypoint {entry!r} not found in the artifact")
        if "ctrl" in opts:
            _hand_over_listeners(int(opts["ctrl"]), opts["listen"])
        _lower_limits(opts["rlimit"])
        os.chdir(workspace)
    except Refused as exc:
        os.write(2, f"sequence: {exc}\n".encode())
        report(f"error {exc}")
        os._exit(127)
    except OSError as exc:
        msg = f"the workspace could not be prepared: {exc}"
        if quota and exc.errno == 28:  # ENOSPC
            msg = "the artifact does not fit into the workspace quota (disk_mb)"
        os.write(2, f"sequence: {msg}\n".encode())
        report(f"error {msg}")
        os._exit(127)
    lease_fd = int(opts.get("lease", "-1"))
    _close_fds({status_fd, lease_fd} if lease_fd >= 0 else {status_fd})
    os.set_inheritable(status_fd, False)
    deadline: float | None = None
    lease_buf = b""
    if lease_fd >= 0:
        os.set_inheritable(lease_fd, False)
        os.set_blocking(lease_fd, False)

    if stop_asked:
        report("exit 0")  # stopped before it started: nothing of the strategy ran
        os._exit(0)
    chld = _signal.SIGCHLD
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {chld})
    pid = os.fork()
    if pid == 0:
        try:
            for name in _SIGNALS_RESET:
                if hasattr(_signal, name):
                    _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, set())
            if parent != "-":
                _prctl(_PR_SET_PDEATHSIG, _signal.SIGKILL)
            os.execv(cmd[0], cmd)
        except BaseException as exc:
            try:
                os.write(2, f"sequence: cannot start {cmd[0]}: {exc}\n".encode())
            except OSError:
                pass
            report(f"error cannot start {cmd[0]}: {exc}")
        os._exit(127)

    if stop_asked:  # it came in the instant between the check above and the fork
        try:
            os.kill(pid, _signal.SIGTERM)
        except OSError:
            pass
    import time as _time

    status: int | None = None
    over = False
    fenced = False
    while status is None:
        while True:  # reap everything: as pid 1 we inherit every orphan
            try:
                got, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                got = 0
            except InterruptedError:
                continue
            if got == 0:
                break
            if got == pid:
                status = st
        if status is not None:
            break
        if quota and not over:
            use = _usage(workspace)
            if use is not None and use[0] > quota:
                over = True
                report(f"quota {use[0]} {quota}")
                _kill(pid)
        wait = 2.0
        if lease_fd >= 0 and not fenced:
            eof = False
            while True:  # the newest deadline the runner wrote
                try:
                    got_bytes = os.read(lease_fd, 4096)
                except BlockingIOError:
                    break
                except OSError:
                    got_bytes = b""
                if not got_bytes:
                    eof = True
                    break
                lease_buf += got_bytes
            *done, lease_buf = lease_buf.split(b"\n")
            for line in done:
                try:
                    deadline = float(line)
                except ValueError:
                    pass
            now = _time.monotonic()
            if eof or (deadline is not None and now > deadline):
                fenced = True
                report(f"fenced {now - deadline if deadline is not None else 0.0:.3f}")
                _kill(pid)
            elif deadline is not None:
                wait = max(0.01, min(wait, deadline - now + 0.005))
        _signal.sigtimedwait({chld}, wait)
    if quota:
        use = _usage(workspace)
        if use is not None:
            if use[0] > quota and not over:
                report(f"quota {use[0]} {quota}")
            report(f"workspace {use[0]} {use[1]}")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        report(f"signal {sig}")
        os._exit(128 + sig)
    code = os.WEXITSTATUS(status)
    report(f"exit {code}")
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
