from __future__ import annotations

import sequence.stream


def test_all_is_exact() -> None:
    names = sequence.stream.__all__
    assert len(set(names)) == len(names) and names == sorted(names)
    for name in names:
        assert hasattr(sequence.stream, name), name


def test_public_classes_are_exported_from_the_package() -> None:
    public = {
        name
        for name, value in vars(sequence.stream).items()
        if not name.startswith("_") and isinstance(value, type)
        and value.__module__.startswith("sequence.stream")
    }  # fmt: skip
    assert public <= set(sequence.stream.__all__)
