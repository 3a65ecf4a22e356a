"""Short codes (graph, fill and run ids): random, uniform over 0-9a-z, never handed out twice."""

from __future__ import annotations

import collections
import os

from sequence.store import ids


def test_codes_have_the_length_asked_and_only_lowercase_alphanumerics() -> None:
    for n in (1, 8, 20, 9_000, 20_000):  # the last two are longer than one refill of the pool
        code = ids.short_code(n)
        assert len(code) == n
        assert set(code) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_codes_do_not_repeat_and_every_character_is_about_as_likely() -> None:
    codes = [ids.short_code(20) for _ in range(50_000)]  # ~120 refills of the pool
    assert len(set(codes)) == len(codes)
    counts = collections.Counter("".join(codes))
    assert len(counts) == 36
    expected = 50_000 * 20 / 36  # 27,778 (σ ≈ 160): the modulo's bias (bytes 252-255) would add 12.5 % to 0-3
    assert all(abs(c - expected) < 0.05 * expected for c in counts.values()), counts


def test_a_forked_child_does_not_hand_out_its_parents_next_codes() -> None:
    ids.short_code(8)  # the pool holds characters now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, ids.short_code(20).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    os.close(r)
    assert len(child) == 20
    assert child != ids.short_code(20)
