"""The data directory is private: 0700, and nothing in it readable by others.

It holds the store (every log line, env and manifest), the credential key,
the runner token and the runs' directories.  ``sequence up``, ``sequence
runner`` and the ``admin`` commands that open the store set the process umask
to 0o077 before they create anything, so every file the platform (SQLite
included: it creates the -wal and -shm files with the database's mode) writes
there is 0600 and every directory 0700; :func:`prepare` creates the directory
that way and tightens one left by an older version, whose files were 0644 in a
0755 directory.

Tightening only clears the group and other bits (an owner's execute bit
stays); symbolic links are neither followed nor changed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("sequence.datadir")

PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """From now on this process creates files 0600 and directories 0700."""
    os.umask(PRIVATE_UMASK)


def prepare(path: Path) -> list[Path]:
    """Create *path* (mode 0700) or tighten it and everything under it to owner-only.

    Returns the paths whose mode changed, after logging a warning about them.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed: list[Path] = []
    failed: list[str] = []

    def tighten(p: Path) -> None:
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                return
            os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o077)
            changed.append(p)
        except FileNotFoundError:
            pass  # removed while we walked
        except OSError as exc:
            failed.append(f"{p}: {exc.strerror}")

    tighten(path)
    for root, dirs, files in os.walk(path, onerror=lambda exc: failed.append(f"{exc.filename}: {exc.strerror}")):
        for name in [*dirs, *files]:
            tighten(Path(root, name))
    if changed:
        shown = ", ".join(str(p) for p in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        log.warning("tightened the permissions of %d path(s) in the data dir %s to owner-only "
                    "(other local users could read them): %s", len(changed), path, shown)
    for msg in failed:
        log.warning("cannot make %s private: %s", path, msg)
    return changed


#: Which store a data dir's coordinator uses, written by ``sequence up`` (the URL without its
#: password): ``admin`` commands given only the data dir of a PostgreSQL coordinator would
#: otherwise open (and create) an empty SQLite store beside it, and report success.
STORE_MARKER = "store.json"


def write_store_marker(data_dir: Path, database: str) -> None:
    tmp = data_dir / (STORE_MARKER + ".tmp")
    tmp.write_text(json.dumps({"database": database}) + "\n")
    os.replace(tmp, data_dir / STORE_MARKER)


def store_marker(data_dir: Path) -> str | None:
    """The store ``sequence up`` last used with *data_dir* (redacted URL), if it said."""
    try:
        value = json.loads((data_dir / STORE_MARKER).read_text()).get("database")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
