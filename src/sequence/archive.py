"""What a strategy artifact's tar members may be: one set of rules for both ends.

The coordinator checks an upload against these rules (:func:`sequence.bundle.inspect_archive`,
a 400 naming the member) and the runner checks them again while it unpacks
(:func:`sequence.runner.workspace.unpack_archive`), so an artifact the runner would refuse at
start is refused at deploy instead, and the runner never trusts the coordinator's check.

The rules: relative paths with no ``..`` and no NUL; only files, folders and symlinks (no hard
links, devices or FIFOs); a symlink's target stays inside the workspace; nothing is written
through a symlink, over a symlink, under a file, or as a file over a folder (or the reverse).
"""

from __future__ import annotations

import tarfile
from pathlib import PurePosixPath


class MemberError(Exception):
    """A member breaks a rule; the message names it."""


def member_path(name: str) -> PurePosixPath | None:
    """The member's path relative to the root, or None for the root itself (``.``, ``./``)."""
    if "\x00" in name:
        raise MemberError(f"archive member {name!r}: NUL in name")
    if name.startswith("/"):
        raise MemberError(f"archive member {name!r}: absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise MemberError(f"archive member {name!r}: '..' components are not allowed")
    if not parts:
        return None
    return PurePosixPath(*parts)


def check_symlink_target(rel: PurePosixPath, target: str) -> None:
    """Refuse a link at *rel* whose *target* is absolute or climbs out of the root."""
    if not target or "\x00" in target:
        raise MemberError(f"archive member {str(rel)!r}: empty or invalid symlink target")
    if target.startswith("/"):
        raise MemberError(f"archive member {str(rel)!r}: symlink to absolute path {target!r} is not allowed")
    depth = len(rel.parts) - 1  # directories above the link
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise MemberError(f"archive member {str(rel)!r}: symlink target {target!r} escapes the workspace")


class Members:
    """The members seen so far of one archive, read in order; :meth:`admit` checks the next."""

    def __init__(self) -> None:
        self.entries: dict[PurePosixPath, str] = {}  # rel -> "d" | "f" | "l"

    def admit(self, rel: PurePosixPath, member: tarfile.TarInfo) -> str | None:
        """Check *member* (at *rel*, from :func:`member_path`) and record it; returns what was
        at *rel* before (``"f"`` for a file it replaces, ``"d"`` for a folder it re-states)."""
        name = member.name
        entries = self.entries
        for i in range(1, len(rel.parts)):
            parent = PurePosixPath(*rel.parts[:i])
            kind = entries.get(parent)
            if kind == "l":
                raise MemberError(f"archive member {name!r}: writes through symlink {str(parent)!r}")
            if kind == "f":
                raise MemberError(f"archive member {name!r}: parent {str(parent)!r} is a file")
        prior = entries.get(rel)
        if prior == "l":
            raise MemberError(f"archive member {name!r}: would replace a symlink")
        if member.islnk():
            raise MemberError(f"archive member {name!r}: hard links are not allowed")
        if member.isdir():
            if prior == "f":
                raise MemberError(f"archive member {name!r}: directory over a file")
            entries[rel] = "d"
        elif member.issym():
            if prior is not None:
                raise MemberError(f"archive member {name!r}: symlink over an existing entry")
            check_symlink_target(rel, member.linkname)
            entries[rel] = "l"
        elif member.isreg():
            if prior == "d":
                raise MemberError(f"archive member {name!r}: file over a directory")
            entries[rel] = "f"
        else:
            kind = "FIFO" if member.isfifo() else "device" if member.isdev() else f"type {member.type!r}"
            raise MemberError(f"archive member {name!r}: {kind} entries are not allowed")
        return prior
