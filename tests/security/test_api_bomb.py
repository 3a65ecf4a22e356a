"""An upload decompression bomb against the coordinator.

Before: a 9 MiB artifact expanding to 10 GiB was accepted (201) after 20 s of
coordinator CPU spent inflating all of it. Now inflation is capped while it
happens (SEQUENCE_MAX_UNPACKED_MB): it stops at the cap and the upload is a 413.
"""

from __future__ import annotations

import base64
import gzip
import json
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sequence import bundle
from sequence.bundle import sha256_hex
from tests.helpers import LiveServer, start_server

MB = 1024 * 1024


def _entry(name: str, data: bytes = b"", size: int | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _bomb(zeros_mb: int, *, entry_first: bool = True) -> bytes:
    """A tar.gz holding main.py and a file of ``zeros_mb`` MiB of zeros, in about 1 KiB per MiB.

    Built as concatenated gzip members (legal gzip, and what an attacker would send):
    one compressed MiB of zeros, repeated.
    """
    main = _entry("main.py", b"print('hi')\n")
    mib = gzip.compress(bytes(MB), compresslevel=9)
    head = (main if entry_first else b"") + _entry("zeros.bin", size=zeros_mb * MB)
    tail = (b"" if entry_first else main) + bytes(2 * tarfile.BLOCKSIZE)
    return gzip.compress(head) + mib * zeros_mb + gzip.compress(tail)


class _Counting:
    """Stands in for the zlib module inside sequence.bundle, counting every inflated byte."""

    def __init__(self) -> None:
        self.inflated = 0
        self.MAX_WBITS = zlib.MAX_WBITS
        self.error = zlib.error

    def decompressobj(self, *a: Any) -> Any:
        real = zlib.decompressobj(*a)
        counter = self

        class D:
            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = real.decompress(data, max_length)
                counter.inflated += len(out)
                return out

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return D()


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    c = _Counting()
    monkeypatch.setattr(bundle, "zlib", c)
    return c


def test_inflation_stops_at_the_cap(counting: _Counting) -> None:
    bomb = _bomb(256)  # 256 MiB of zeros in a few hundred KiB
    assert len(bomb) < MB
    with pytest.raises(bundle.ArchiveTooLarge) as info:
        bundle.inspect_archive(bomb, "main.py", max_unpacked=4 * MB)
    assert "4 MiB" in str(info.value)
    # Measured outside the code under test: never more than the cap plus one read.
    assert 4 * MB < counting.inflated <= 4 * MB + 2 * bundle._CappedGunzip.CHUNK


def test_an_archive_under_the_cap_is_read_to_the_end(counting: _Counting) -> None:
    names = bundle.inspect_archive(_bomb(2, entry_first=False), "main.py", max_unpacked=4 * MB)
    assert names == ["zeros.bin", "main.py"] and 2 * MB < counting.inflated < 3 * MB


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[LiveServer]:
    srv = start_server(tmp_path / "data", environ={"SEQUENCE_MAX_UNPACKED_MB": "8"})
    yield srv
    srv.stop()


def test_an_upload_bomb_is_refused_with_413_without_inflating_it(capped: LiveServer, counting: _Counting) -> None:
    bomb = _bomb(10 * 1024)  # 10 GiB inflated, ~10 MiB on the wire: the attack as reported
    body = {"name": "bomb", "artifact_base64": base64.b64encode(bomb).decode(), "artifact_sha256": sha256_hex(bomb)}
    with capped.client() as c:
        r = c.post("/v1/strategies", json=body)
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "payload_too_large" and "8 MiB" in err["message"]
        assert err["details"] == {"field": "artifact", "limit_mb": 8}
        assert counting.inflated <= 8 * MB + 2 * bundle._CappedGunzip.CHUNK
        assert c.get("/v1/strategies").json()["strategies"] == []
        # The multipart path goes through the same inspection.
        r = c.post("/v1/strategies", files={"artifact": ("a.tar.gz", bomb, "application/gzip")},
                   data={"spec": json.dumps({"name": "bomb", "artifact_sha256": sha256_hex(bomb)})})
        assert r.status_code == 413, r.text
