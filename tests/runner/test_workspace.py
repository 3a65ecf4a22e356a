"""Artifact verification and safe unpacking (hostile archives)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from pathlib import Path

import pytest

from sequence.runner import ArchiveLimits, WorkspaceError
from sequence.runner.workspace import prepare_workspace, unpack_archive
from tests.runner.helpers import file_member, make_artifact, tar_gz

MAIN = "print('hi')\n"


def _prepare(tmp_path: Path, data: bytes, **kw: object) -> Path:
    ws = prepare_workspace(
        tmp_path / "runs",
        str(kw.pop("run_id", "r1")),
        data,
        hashlib.sha256(data).hexdigest(),
        entrypoint=str(kw.pop("entrypoint", "main.py")),
        manifest=kw.pop("manifest", {"k": [1, 2]}),  # type: ignore[arg-type]
        limits=kw.pop("limits", None),  # type: ignore[arg-type]
    )
    return ws.path


def _rejects(tmp_path: Path, data: bytes, match: str, **kw: object) -> None:
    with pytest.raises(WorkspaceError, match=match):
        _prepare(tmp_path, data, **kw)
    assert not (tmp_path / "runs" / "r1").exists(), "a rejected run leaves nothing behind"


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.devmajor, info.devminor = 1, 3
    return info, None


def test_unpacks_files_directories_manifest_and_safe_modes(tmp_path: Path) -> None:
    data = tar_gz(
        [
            file_member("main.py", MAIN),
            file_member("pkg/__init__.py", ""),
            file_member("bin/tool.sh", "#!/bin/sh\n", mode=0o4777),
            _symlink("pkg/alias.py", "__init__.py"),
        ]
    )
    ws = _prepare(tmp_path, data)
    assert (ws / "main.py").read_text() == MAIN
    assert (ws / "pkg" / "alias.py").is_symlink()
    mode = stat.S_IMODE((ws / "bin" / "tool.sh").stat().st_mode)
    assert mode == 0o755, "exec bit kept; setuid and group/other write dropped"
    assert stat.S_IMODE((ws / "main.py").stat().st_mode) == 0o644
    assert json.loads((ws / ".sequence" / "manifest.json").read_text()) == {"k": [1, 2]}


def test_sha256_mismatch_is_rejected(tmp_path: Path) -> None:
    data, _ = make_artifact({"main.py": MAIN})
    with pytest.raises(WorkspaceError, match="SHA-256 mismatch"):
        prepare_workspace(
            tmp_path / "runs", "r1", data, "0" * 64, entrypoint="main.py", manifest={}
        )
    assert not (tmp_path / "runs" / "r1").exists()


def test_not_a_gzip_tar_is_rejected(tmp_path: Path) -> None:
    _rejects(tmp_path, b"PK\x03\x04 this is a zip", "not a gzip-compressed tar")
    _rejects(tmp_path, gzip.compress(b"not a tar at all" * 100), "not a valid tar.gz")
    good, _ = make_artifact({"main.py": MAIN})
    _rejects(tmp_path, good[: len(good) // 2], "not a valid tar.gz")


def test_absolute_path_member_is_rejected(tmp_path: Path) -> None:
    _rejects(
        tmp_path,
        tar_gz([file_member("main.py", MAIN), file_member("/etc/cron.d/x", "x")]),
        "absolute",
    )


def test_dotdot_traversal_is_rejected(tmp_path: Path) -> None:
    _rejects(tmp_path, tar_gz([file_member("../../evil.py", "x")]), r"'\.\.'")
    _rejects(tmp_path, tar_gz([file_member("a/../../evil.py", "x")]), r"'\.\.'")
    assert not (tmp_path / "evil.py").exists()


def test_symlink_to_absolute_or_escaping_target_is_rejected(tmp_path: Path) -> None:
    _rejects(tmp_path, tar_gz([_symlink("etc", "/etc")]), "absolute path")
    _rejects(tmp_path, tar_gz([_symlink("a/up", "../../outside")]), "escapes the workspace")


def test_write_through_a_symlink_is_rejected(tmp_path: Path) -> None:
    # Classic: `link -> /etc` then `link/passwd`.  Even an inside target is refused.
    _rejects(
        tmp_path, tar_gz([_symlink("link", "/etc"), file_member("link/passwd", "x")]), "absolute"
    )
    _rejects(
        tmp_path,
        tar_gz([file_member("sub/a", "x"), _symlink("link", "sub"), file_member("link/b", "x")]),
        "through symlink",
    )
    _rejects(
        tmp_path,
        tar_gz([file_member("t", "x"), _symlink("link", "t"), file_member("link", "overwrite")]),
        "replace a symlink",
    )


def test_hard_link_is_rejected(tmp_path: Path) -> None:
    _rejects(
        tmp_path,
        tar_gz([file_member("main.py", MAIN), _special("h", tarfile.LNKTYPE, "main.py")]),
        "hard links",
    )


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_device_and_fifo_entries_are_rejected(tmp_path: Path, kind: bytes, word: str) -> None:
    _rejects(tmp_path, tar_gz([file_member("main.py", MAIN), _special("dev/x", kind)]), word)


def _bomb(total: int) -> bytes:
    """A tar.gz whose single member decompresses to *total* zero bytes."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = total
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    out = [comp.compress(info.tobuf(format=tarfile.PAX_FORMAT))]
    chunk = bytes(1 << 20)
    for _ in range(total >> 20):
        out.append(comp.compress(chunk))
    out.append(comp.compress(bytes(1024)))  # end-of-archive blocks
    out.append(comp.flush())
    return b"".join(out)


def test_decompression_bomb_is_stopped_at_the_limit(tmp_path: Path) -> None:
    limit = 8 << 20
    bomb = _bomb(256 << 20)
    assert len(bomb) < (1 << 20), "a real bomb: tiny on the wire"
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(WorkspaceError, match=r"exceed|expands to more than"):
        unpack_archive(bomb, dest, ArchiveLimits(max_bytes=limit))
    written = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    assert written <= limit, "stopped while streaming, not after writing it all"


def test_header_bomb_is_stopped_while_streaming(tmp_path: Path) -> None:
    # A 256 MiB pax extended header: tarfile would read it into memory before
    # yielding any member.  Counting the decompressed stream stops it first.
    limit = 4 << 20
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 256 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(info.tobuf(format=tarfile.USTAR_FORMAT))]
    for _ in range(256):
        parts.append(comp.compress(bytes(1 << 20)))
    parts.append(comp.flush())
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(WorkspaceError, match="expands to more than"):
        unpack_archive(b"".join(parts), dest, ArchiveLimits(max_bytes=limit))


def test_many_members_adding_up_past_the_byte_limit_are_rejected(tmp_path: Path) -> None:
    files = {f"chunk{i}.bin": bytes(1 << 20) for i in range(8)}
    files["main.py"] = MAIN
    data, _ = make_artifact(files)
    _rejects(tmp_path, data, r"exceed|expands", limits=ArchiveLimits(max_bytes=4 << 20))


def test_default_limits_are_ten_thousand_members_and_512_mib() -> None:
    assert ArchiveLimits().max_members == 10_000
    assert ArchiveLimits().max_bytes == 512 * 1024 * 1024


def _many_members(n: int) -> bytes:
    """n empty files, headers patched from one template (tobuf() per member is slow)."""
    template = tarfile.TarInfo("f000000").tobuf(format=tarfile.USTAR_FORMAT)
    raw = io.BytesIO()
    for i in range(n):
        h = bytearray(template)
        h[1:7] = f"{i:06d}".encode()
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\x00 " % sum(h)
        raw.write(h)
    raw.write(bytes(1024))
    return gzip.compress(raw.getvalue(), compresslevel=1)


def test_archive_with_100k_members_is_rejected(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(WorkspaceError, match="more than 10000 members"):
        unpack_archive(_many_members(100_000), dest)
    assert len(os.listdir(dest)) <= 10_000


def test_member_limit_is_configurable(tmp_path: Path) -> None:
    files = {f"m{i}.py": "" for i in range(5)}
    files["main.py"] = MAIN
    data, _ = make_artifact(files)
    _rejects(tmp_path, data, "more than 3 members", limits=ArchiveLimits(max_members=3))


def test_entrypoint_must_exist_and_stay_inside(tmp_path: Path) -> None:
    data, _ = make_artifact({"main.py": MAIN})
    _rejects(tmp_path, data, "not found", entrypoint="missing.py")
    _rejects(tmp_path, data, "not a valid path|'..'", entrypoint="../main.py")
    _rejects(tmp_path, data, "absolute", entrypoint="/etc/passwd")
    _rejects(tmp_path, data, "not a valid path", entrypoint=".sequence/manifest.json")
    esc = tar_gz([file_member("real.py", MAIN), _symlink("main.py", "real.py")])
    assert (_prepare(tmp_path, esc) / "main.py").read_text() == MAIN


def test_reserved_dot_sequence_entries_in_the_archive_are_ignored(tmp_path: Path) -> None:
    data = tar_gz(
        [
            file_member("main.py", MAIN),
            file_member(".sequence/manifest.json", '{"forged": true}'),
            _symlink(".sequence/evil", "../main.py"),
        ]
    )
    ws = _prepare(tmp_path, data, manifest={"real": 1})
    assert json.loads((ws / ".sequence" / "manifest.json").read_text()) == {"real": 1}
    assert sorted(os.listdir(ws / ".sequence")) == ["manifest.json"]


def test_duplicate_member_later_wins_without_following_links(tmp_path: Path) -> None:
    data = tar_gz([file_member("main.py", "old"), file_member("main.py", MAIN)])
    assert (_prepare(tmp_path, data) / "main.py").read_text() == MAIN


def test_unsafe_run_id_is_rejected(tmp_path: Path) -> None:
    data, _ = make_artifact({"main.py": MAIN})
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(WorkspaceError, match="run id"):
            _prepare(tmp_path, data, run_id=bad)


def test_a_stale_run_directory_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "runs" / "r1" / "workspace"
    stale.mkdir(parents=True)
    (stale / "leftover.txt").write_text("old")
    data, _ = make_artifact({"main.py": MAIN})
    ws = _prepare(tmp_path, data)
    assert not (ws / "leftover.txt").exists()


def test_manifest_must_be_json(tmp_path: Path) -> None:
    data, _ = make_artifact({"main.py": MAIN})
    _rejects(tmp_path, data, "manifest", manifest={"x": object()})
