"""sequence.deps: wheel targets, wheel file names, locks and layer ids."""

from __future__ import annotations

from typing import Any

import pytest

from sequence import deps

T312 = deps.target_for((3, 12, 0), "linux-x86_64", ("glibc", "2.36"))
SHA_A = "a" * 64
SHA_B = "b" * 64
MB = 1024 * 1024


def _w(filename: str = "demo_pkg-1.0-py3-none-any.whl", sha256: str = SHA_A, size: int = 100) -> dict[str, Any]:
    return {"filename": filename, "sha256": sha256, "size": size}


def _lock(wheels: Any, target: deps.WheelTarget = T312, max_wheel: int = MB, max_layer: int = 2 * MB) -> list[
        deps.LockedWheel]:
    return deps.parse_lock(wheels, target, max_wheel_bytes=max_wheel, max_layer_bytes=max_layer)


# -- target_for ---------------------------------------------------------------------------------


def test_target_for_glibc_236_x86_64_lists_newest_first_with_legacy_aliases() -> None:
    t = T312
    assert (t.python, t.implementation, t.abi) == ("3.12", "cp", "cp312")
    assert t.platforms[0] == "manylinux_2_36_x86_64"
    for alias in ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert alias in t.platforms
    assert "manylinux_2_5_x86_64" in t.platforms and "manylinux_2_4_x86_64" not in t.platforms
    assert "manylinux_2_37_x86_64" not in t.platforms
    # newest first: each alias right after the tag it names
    assert t.platforms.index("manylinux_2_17_x86_64") < t.platforms.index("manylinux2014_x86_64") \
        < t.platforms.index("manylinux_2_16_x86_64")
    assert t.to_dict() == {"python": "3.12", "implementation": "cp", "abi": "cp312", "platforms": list(t.platforms)}


def test_target_for_aarch64_has_manylinux2014_but_not_the_x86_only_aliases() -> None:
    t = deps.target_for((3, 12, 0), "linux-aarch64", ("glibc", "2.36"))
    assert t.platforms[0] == "manylinux_2_36_aarch64"
    assert "manylinux2014_aarch64" in t.platforms
    assert not any(p.startswith(("manylinux2010", "manylinux1_")) for p in t.platforms)


def test_target_for_musl_lists_musllinux_tags_and_no_manylinux() -> None:
    t = deps.target_for((3, 12, 0), "linux-x86_64", ("musl", "1.2.4"))
    assert t.platforms == ("musllinux_1_2_x86_64", "musllinux_1_1_x86_64", "musllinux_1_0_x86_64")
    assert not any("manylinux" in p for p in t.platforms)


def test_target_for_free_threaded_abi() -> None:
    assert deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36"), abiflags="t").abi == "cp313t"


# -- accepts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", [
    "numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "numpy-2.0.0-cp312-cp312-manylinux_2_36_x86_64.whl",
    "numpy-1.0-cp312-cp312-manylinux1_x86_64.whl",
    "cryptography-42.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
    "demo_pkg-1.0-py3-none-any.whl",
    "six-1.16.0-py2.py3-none-any.whl",
    "tool-1.0-1build-py3-none-any.whl",
])
def test_accepts_what_cpython_312_on_glibc_236_can_import(filename: str) -> None:
    assert T312.accepts(filename)


@pytest.mark.parametrize("filename", [
    "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",  # another python
    "numpy-2.0.0-cp313-cp313-manylinux_2_17_x86_64.whl",
    "cryptography-42.0.0-cp313-abi3-manylinux_2_28_x86_64.whl",  # abi3 built for a newer python
    "numpy-2.0.0-cp312-cp312-manylinux_2_38_x86_64.whl",  # a newer glibc
    "numpy-2.0.0-cp312-cp312-manylinux_2_17_aarch64.whl",  # another arch
    "numpy-2.0.0-cp312-cp312-musllinux_1_2_x86_64.whl",
    "numpy-2.0.0-cp312-cp312-macosx_11_0_arm64.whl",
    "numpy-2.0.0-cp312-cp312-win_amd64.whl",
    "old-1.0-py2-none-any.whl",
    "not a wheel.zip",
])
def test_refuses_what_cpython_312_on_glibc_236_cannot_import(filename: str) -> None:
    assert not T312.accepts(filename)


def test_abi3_is_refused_by_a_free_threaded_interpreter() -> None:
    ft = deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36"), abiflags="t")
    assert not ft.accepts("cryptography-42.0.0-cp39-abi3-manylinux_2_28_x86_64.whl")
    assert ft.accepts("x-1.0-cp313-cp313t-manylinux_2_28_x86_64.whl")
    assert not ft.accepts("x-1.0-cp313-cp313-manylinux_2_28_x86_64.whl")
    assert deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36")).accepts(
        "cryptography-42.0.0-cp39-abi3-manylinux_2_28_x86_64.whl")


def test_parse_wheel_filename_canonicalises_the_name_and_expands_compressed_tags() -> None:
    name, version, tags = deps.parse_wheel_filename("Foo_Bar-1.2.3-py2.py3-none-any.whl")
    assert (name, version) == ("foo-bar", "1.2.3")
    assert tags == {("py2", "none", "any"), ("py3", "none", "any")}
    with pytest.raises(deps.LockError):
        deps.parse_wheel_filename("foo-1.0.tar.gz")


# -- parse_lock ---------------------------------------------------------------------------------


def test_parse_lock_sorts_by_name_and_keeps_versions() -> None:
    got = _lock([_w("zeta-2.0-py3-none-any.whl", SHA_A), _w("Alpha_Pkg-1.0-py3-none-any.whl", SHA_B, 5)])
    assert [(w.name, w.version, w.size) for w in got] == [("alpha-pkg", "1.0", 5), ("zeta", "2.0", 100)]


@pytest.mark.parametrize(("wheels", "field"), [
    ([_w("demo_pkg-1.0.tar.gz")], "wheels[0].filename"),
    ([_w(), _w("x.whl", SHA_B)], "wheels[1].filename"),
    ([_w("demo-1.0-py3-none-any.whl/../../x-1.0-py3-none-any.whl")], "wheels[0].filename"),
    ([_w("x" * 300 + "-1.0-py3-none-any.whl")], "wheels[0].filename"),  # over 255 characters
    ([{"filename": 7, "sha256": SHA_A, "size": 1}], "wheels[0].filename"),
    ([_w(sha256="A" * 64)], "wheels[0].sha256"),
    ([_w(sha256="a" * 63)], "wheels[0].sha256"),
    ([_w(sha256=None)], "wheels[0].sha256"),  # type: ignore[arg-type]
    ([_w(size=0)], "wheels[0].size"),
    ([_w(size=-1)], "wheels[0].size"),
    ([_w(size=MB + 1)], "wheels[0].size"),
    ([_w(size=True)], "wheels[0].size"),
    ([_w(size="100")], "wheels[0].size"),  # type: ignore[arg-type]
    ([_w(), _w("Demo.Pkg-2.0-py3-none-any.whl", SHA_B)], "wheels[1].filename"),  # the same package twice
    ([_w("a-1.0-py3-none-any.whl", SHA_A, MB), _w("b-1.0-py3-none-any.whl", SHA_B, MB),
      _w("c-1.0-py3-none-any.whl", "c" * 64, 1)], "wheels"),  # 2 MiB + 1 over the layer cap
    ([_w("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl")], "wheels[0].filename"),
    ([_w("numpy-2.0.0-cp312-cp312-macosx_11_0_arm64.whl")], "wheels[0].filename"),
    (["demo_pkg-1.0-py3-none-any.whl"], "wheels[0]"),
    ([], "wheels"),
    ({"filename": "x"}, "wheels"),
    ([_w(sha256=f"{i:064x}", filename=f"p{i}-1.0-py3-none-any.whl", size=1) for i in range(deps.MAX_WHEELS + 1)],
     "wheels"),
])
def test_parse_lock_errors_name_the_field(wheels: Any, field: str) -> None:
    with pytest.raises(deps.LockError) as info:
        _lock(wheels)
    assert info.value.field == field, str(info.value)


def test_parse_lock_says_why_a_wheel_does_not_fit_the_target() -> None:
    with pytest.raises(deps.LockError, match=r"does not run on the runners' interpreter \(CPython 3\.12"):
        _lock([_w("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl")])
    with pytest.raises(deps.LockError, match="appears twice"):
        _lock([_w(), _w("demo_pkg-2.0-py3-none-any.whl", SHA_B)])
    with pytest.raises(deps.LockError, match="add up to"):
        _lock([_w("a-1.0-py3-none-any.whl", SHA_A, MB), _w("b-1.0-py3-none-any.whl", SHA_B, MB + 0)],
              max_layer=2 * MB - 1)


def test_parse_lock_at_the_caps_is_accepted() -> None:
    got = _lock([_w("a-1.0-py3-none-any.whl", SHA_A, MB), _w("b-1.0-py3-none-any.whl", SHA_B, MB)])
    assert sum(w.size for w in got) == 2 * MB


# -- layer_id -----------------------------------------------------------------------------------


def test_layer_id_is_order_independent_and_follows_every_hash() -> None:
    a = _lock([_w("a-1.0-py3-none-any.whl", SHA_A), _w("b-1.0-py3-none-any.whl", SHA_B)])
    b = list(reversed(a))
    lid = deps.layer_id(a, T312)
    assert deps.SHA256_RE.match(lid)
    assert deps.layer_id(b, T312) == lid
    changed = _lock([_w("a-1.0-py3-none-any.whl", SHA_A), _w("b-1.0-py3-none-any.whl", "c" * 64)])
    assert deps.layer_id(changed, T312) != lid
    renamed = _lock([_w("a-1.0-py3-none-any.whl", SHA_A), _w("b-1.1-py3-none-any.whl", SHA_B)])
    assert deps.layer_id(renamed, T312) != lid
    assert deps.layer_id(_lock([_w("a-1.0-py3-none-any.whl", SHA_A)]), T312) != lid
    # another interpreter is another layer, even with the same wheels
    other = deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36"))
    assert deps.layer_id(a, other) != lid


# -- WheelTarget.from_dict -----------------------------------------------------------------------


def test_from_dict_round_trips() -> None:
    assert deps.WheelTarget.from_dict(T312.to_dict()) == T312


@pytest.mark.parametrize(("change", "field"), [
    ({"python": "3"}, "target.python"),
    ({"python": 3.12}, "target.python"),
    ({"python": "2.7"}, "target.python"),
    ({"python": "3.12; rm -rf /"}, "target.python"),
    ({"implementation": "pp"}, "target.implementation"),
    ({"abi": "abi3"}, "target.abi"),
    ({"abi": None}, "target.abi"),
    ({"platforms": []}, "target.platforms"),
    ({"platforms": "manylinux_2_36_x86_64"}, "target.platforms"),
    ({"platforms": ["Manylinux_2_36_X86_64"]}, "target.platforms"),
    ({"platforms": ["x" * 65]}, "target.platforms"),
    ({"platforms": ["--index-url=http://evil"]}, "target.platforms"),
    ({"platforms": ["a"] * 65}, "target.platforms"),
    ({"platforms": [1]}, "target.platforms"),
])
def test_from_dict_rejects_malformed_targets_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(deps.LockError) as info:
        deps.WheelTarget.from_dict({**T312.to_dict(), **change})
    assert info.value.field == field


@pytest.mark.parametrize("data", [None, "cp312", ["3.12"], 7])
def test_from_dict_rejects_non_objects(data: Any) -> None:
    with pytest.raises(deps.LockError) as info:
        deps.WheelTarget.from_dict(data)
    assert info.value.field == "target"


def test_pip_args_name_the_target() -> None:
    args = T312.pip_args()
    assert args[:7] == ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    assert args.count("--platform") == len(T312.platforms)
    assert args[args.index("--platform") + 1] == "manylinux_2_36_x86_64"
