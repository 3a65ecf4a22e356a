"""The strategy's seccomp filter: Docker's default profile, tightened.

Built with the host's libseccomp (``libseccomp.so.2``, through ctypes) and
exported as a classic BPF program that bubblewrap loads (``--seccomp FD``)
just before it executes the supervisor.  The policy is an allowlist: every
system call not named below fails with ``EPERM``.

Starting point: the allowlist of Docker's default profile for a container
*without* capabilities (moby ``profiles/seccomp/default.json``), i.e. the
base list, ``socket`` except ``AF_VSOCK``, the harmless ``personality``
values, ``arch_prctl``/``modify_ldt`` on x86, ``clone`` without any
namespace flag, and ``clone3`` answering ``ENOSYS`` (so libc falls back to
``clone``, whose flags a classic BPF filter can inspect).

Stricter than Docker's, on purpose:

* ``ptrace``, ``process_vm_readv``/``process_vm_writev`` — Docker allows them
  on kernels ≥ 4.8; a strategy has no business tracing anything.
* ``io_uring_setup``/``_enter``/``_register`` — a large kernel attack
  surface, and io_uring operations bypass this filter.
* ``adjtimex``/``clock_adjtime`` — clock calls; reading the clock stays.

Never allowed (not on the list): keyrings (``add_key``, ``keyctl``,
``request_key``), ``unshare``/``setns``/``mount``, ``bpf``,
``perf_event_open``, kernel modules, ``kexec``, ``reboot``, ``swapon``,
``userfaultfd``, setting the clock, ``chroot``, ``pivot_root``, ``acct``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading

__all__ = ["ALLOWED", "SeccompUnavailable", "compile_filter", "filter_bytes"]


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused the policy (the text says which)."""


# Docker's default allowlist for a container without capabilities, minus the
# calls named in the module docstring.  Names unknown on this architecture
# (the 32-bit variants on x86_64) are skipped when the filter is built.
ALLOWED: tuple[str, ...] = (
    "accept", "accept4", "access", "alarm", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
    "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
    "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64",
    "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
    "waitid", "waitpid", "write", "writev",
    # x86 only (Docker: amd64/x32/x86)
    "arch_prctl", "modify_ldt",
)

# clone(2) flags that create namespaces: CLONE_NEWNS | NEWCGROUP | NEWUTS |
# NEWIPC | NEWUSER | NEWPID | NEWNET (Docker's 2114060288).
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40
# personality(2) values Docker allows: PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE
# (and its UNAME26 variant), and 0xffffffff (query).
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

_ACT_ALLOW = 0x7FFF0000
_CMP_NE, _CMP_EQ, _CMP_MASKED_EQ = 1, 4, 7
_FLTATR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5: 2 = binary tree of syscalls (faster)


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_lib: ctypes.CDLL | None = None
_lock = threading.Lock()
_cache: bytes | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(
            f"libseccomp is not installed ({exc}); install it with `apt-get install libseccomp2`"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    _lib = lib
    return lib


def compile_filter() -> bytes:
    """Build the policy and return the BPF program (``struct sock_filter[]``)."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(_act_errno(errno.EPERM))
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        # Best effort: older libseccomp lacks the attribute; the filter is the same.
        lib.seccomp_attr_set(ctx, _FLTATR_CTL_OPTIMIZE, 2)

        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                return  # not a system call of this architecture
            arr = (_ArgCmp * len(cmps))(*(_ArgCmp(*c) for c in cmps)) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc < 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")

        for name in ALLOWED:
            rule(_ACT_ALLOW, name)
        rule(_ACT_ALLOW, "socket", (0, _CMP_NE, AF_VSOCK, 0))
        for value in PERSONALITIES:
            rule(_ACT_ALLOW, "personality", (0, _CMP_EQ, value, 0))
        rule(_ACT_ALLOW, "clone", (0, _CMP_MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
        rule(_act_errno(errno.ENOSYS), "clone3")

        r, w = os.pipe()
        try:
            out = bytearray()
            done = threading.Event()

            def drain() -> None:
                while chunk := os.read(r, 65536):
                    out.extend(chunk)
                done.set()

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            rc = lib.seccomp_export_bpf(ctx, w)
            os.close(w)
            w = -1
            done.wait(10)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
        finally:
            if w >= 0:
                os.close(w)
            os.close(r)
        if not out or len(out) % 8:
            raise SeccompUnavailable("libseccomp exported an empty or malformed filter")
        return bytes(out)
    finally:
        lib.seccomp_release(ctx)


def filter_bytes() -> bytes:
    """The compiled filter, built once per process."""
    global _cache
    with _lock:
        if _cache is None:
            _cache = compile_filter()
        return _cache
