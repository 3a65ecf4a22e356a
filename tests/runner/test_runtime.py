"""Runtime interpreter discovery: base installations, never a virtualenv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sequence.runner import InterpreterNotFound
from sequence.runner.runtime import bare_venv, discover_runtime, probe_interpreter


def test_a_virtualenv_resolves_to_its_base_installation() -> None:
    rt = probe_interpreter(sys.executable)
    assert rt.prefix == Path(sys.base_prefix)
    assert not rt.executable.is_relative_to(Path(sys.prefix)) or sys.prefix == sys.base_prefix
    assert rt.version[:2] == sys.version_info[:2]
    assert all(p.is_relative_to(rt.prefix) for p in rt.site_packages)


def test_discovery_falls_back_to_the_runners_base_interpreter_when_nothing_else_exists() -> None:
    rt = discover_runtime(environ={"PATH": "/nonexistent", "HOME": "/nonexistent"}, prefer=(2, 1))
    assert rt.prefix == Path(sys.base_prefix)


def test_configured_interpreter_must_work() -> None:
    with pytest.raises(InterpreterNotFound, match="cannot run it"):
        discover_runtime("/nonexistent/python3")


def test_discovery_prefers_cpython_312_when_installed() -> None:
    rt = discover_runtime()
    candidates = [Path(p) for p in ("/usr/local/bin/python3.12", "/usr/bin/python3.12")]
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.12.*/bin/python3.12"))
    if not any(p.exists() for p in candidates + pyenv):
        pytest.skip("no CPython 3.12 on this host")
    assert rt.version[:2] == (3, 12)
    assert rt.implementation == "cpython"


def test_bare_venv_hides_the_installations_site_packages(tmp_path: Path) -> None:
    rt = probe_interpreter(sys.executable)
    exe = bare_venv(rt, tmp_path)
    assert bare_venv(rt, tmp_path) == exe, "idempotent"
    out = subprocess.run(
        [exe, "-s", "-c", "import sys; print('\\n'.join(sys.path))"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    paths = [Path(p) for p in out.stdout.splitlines() if p]
    for site in rt.site_packages:
        assert site not in paths


def test_the_runtime_mirror_and_the_folders_above_it_are_traversable_under_a_private_umask(tmp_path: Path) -> None:
    # `sequence up` runs under umask 077; a 0700 parent (/var/lib/sequence on a fresh
    # host) hid the mirror from the sandbox's unprivileged user: every run failed.
    import os
    import stat

    from sequence.runner.runtime import _build_mirror

    src = tmp_path / "python"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "python3").write_text("#!/bin/sh\n")
    cache = tmp_path / "var" / "lib" / "sequence" / "runtimes"
    old = os.umask(0o077)
    try:
        _build_mirror(src, cache / "cpython-test", set(), cache)
    finally:
        os.umask(old)
    for folder in (tmp_path / "var", tmp_path / "var" / "lib", tmp_path / "var" / "lib" / "sequence", cache):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert (cache / "cpython-test" / "bin" / "python3").exists()
