from __future__ import annotations

import sequence.market
import sequence.market.venues


def test_all_is_exact() -> None:
    # (ruff's RUF022 keeps each __all__ sorted)
    for module in (sequence.market, sequence.market.venues):
        names = module.__all__
        assert len(set(names)) == len(names)
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_classes_are_exported_from_the_package() -> None:
    public = {
        name
        for name, value in vars(sequence.market).items()
        if not name.startswith("_") and isinstance(value, type)
        and value.__module__.startswith("sequence.market")
    }  # fmt: skip
    assert public <= set(sequence.market.__all__)

