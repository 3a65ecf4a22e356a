"""What a requirements.txt may ask for, checked before pip runs on the deploying machine.

Before: a local folder, an editable or a source archive had its ``setup.py`` run here by pip
(``--only-binary`` does not apply to them), and a folder then resolved to nothing: the
deploy succeeded and the strategy failed at import. A private index's password in the file
was deployed with the strategy, which can read its own files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sequence.cli.deps import check_requirements, requirement_lines
from sequence.cli.errors import CliError


def _check(tmp_path: Path, text: str, **others: str) -> None:
    for name, body in others.items():
        (tmp_path / name.replace("_", ".")).write_text(body)
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    check_requirements(path)


ACCEPTED = [
    "numpy==2.1  # pinned\nsix\\\n==1.16\n",
    "--extra-index-url https://idx.example/simple\n--find-links wheels/\nrequests[socks]>=2; python_version>'3'\n",
    "pkg @ https://x.example/pkg-1.0-py3-none-any.whl#sha256=ab\n",
    "wheels/pkg-1.0-py3-none-any.whl\n",
    "# only a comment\n\n",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_index_requirements_options_and_wheels_are_accepted(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


@pytest.mark.parametrize(("text", "words"), [
    ("-e /tmp/evil\n", "line 1: an editable requirement"),
    ("six\n--editable=./evil\n", "line 2: an editable requirement"),
    ("/tmp/oper/evil/evilpkg\n", "/tmp/oper/evil/evilpkg is a local path"),
    ("./evil\n", "./evil is a local path"),
    ("evil-1.0.tar.gz\n", "evil-1.0.tar.gz is a local path"),
    ("evilpkg @ file:///tmp/evil-1.0.tar.gz\n", "file:///tmp/evil-1.0.tar.gz is not a wheel"),
    ("https://x.example/evil-1.0.tar.gz\n", "is not a wheel"),
    ("git+https://git.example/evil.git\n", "is not a wheel"),
    ("--extra-index-url http://deployer:IdxT0kenSecret99@idx.example/simple\nsix\n", "a URL with a password"),
])
def test_what_pip_would_build_here_or_a_password_is_refused_naming_the_line(
        tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(CliError) as err:
        _check(tmp_path, text)
    assert words in err.value.message and "requirements.txt line" in err.value.message
    assert err.value.hint and ("pip wheel" in err.value.hint or "PIP_INDEX_URL" in err.value.hint)
    assert "IdxT0kenSecret99" not in err.value.message + err.value.hint


def test_a_nested_requirements_file_is_checked_too_and_a_cycle_ends(tmp_path: Path) -> None:
    with pytest.raises(CliError) as err:
        _check(tmp_path, "six\n-r more.txt\n", more_txt="-r requirements.txt\n-e ../evil\n")
    assert "more.txt line 2: an editable requirement" in err.value.message
    _check(tmp_path, "-r more.txt\n", more_txt="-r requirements.txt\nnumpy\n")


def test_continuation_lines_are_joined_and_comments_dropped(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("numpy \\\n  ==2.1 # pin\n#x\n\nsix#not-a-comment\n")
    assert requirement_lines(path) == [(1, "numpy   ==2.1"), (5, "six#not-a-comment")]
