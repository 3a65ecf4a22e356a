"""The docs are tested: they must keep up with the code they describe.

- docs/cli.md is what scripts/gen_cli_docs.py generates today;
- every route in the coordinator's OpenAPI schema is in docs/api.md, with a
  curl example (the runner protocol's in docs/runner-protocol.md);
- every SEQUENCE_* setting is in docs/configuration.md;
- every relative link in README.md and docs/*.md resolves, anchors included;
- every example folder deploys: main.py plus a Sequence.toml the CLI accepts.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sequence.api.app import create_app
from sequence.bundle import parse_config, validate_entrypoint, validate_name
from sequence.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("docs-app")))
    return app.openapi()


def _routes(openapi: dict) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, ops in openapi["paths"].items()
                  for method in ops if method in HTTP_METHODS)


# -- (a) the CLI reference ------------------------------------------------------------------

def test_cli_reference_is_not_stale() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"docs/cli.md is stale: run `make docs`\n{res.stdout}{res.stderr}"


# -- (b) the REST reference -----------------------------------------------------------------

def test_every_openapi_path_is_documented(openapi: dict) -> None:
    api, runners = _read(DOCS / "api.md"), _read(DOCS / "runner-protocol.md")
    missing = []
    for path in sorted(openapi["paths"]):
        doc = runners if path.startswith("/v1/runners/") else api
        if path not in doc:
            missing.append(path)
    assert missing == [], f"undocumented paths (docs/api.md; /v1/runners/* in docs/runner-protocol.md): {missing}"


def test_every_route_is_named_with_its_method(openapi: dict) -> None:
    lines = {
        "api": _read(DOCS / "api.md").splitlines(),
        "runners": _read(DOCS / "runner-protocol.md").splitlines(),
    }
    missing = []
    for method, path in _routes(openapi):
        doc = lines["runners" if path.startswith("/v1/runners/") else "api"]
        pattern = re.compile(rf"\b{method}\b.*`{re.escape(path)}[`?]|\b{method} {re.escape(path)}(?![\w/{{])")
        if not any(pattern.search(line) for line in doc):
            missing.append(f"{method} {path}")
    assert missing == [], f"routes whose method and path appear on no line together: {missing}"


def _curl_calls(markdown: str) -> list[tuple[str, str]]:
    """(METHOD, url path) of every curl command in the fenced code blocks."""
    calls = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in command.split("|"):
                if not re.search(r"\bcurl\b", part):
                    continue
                url = re.search(r"\$SEQUENCE_API_URL(/[^\"'?\s]*)", part)
                if url is None:
                    continue
                explicit = re.search(r"-X\s+([A-Z]+)", part)
                if explicit:
                    method = explicit.group(1)
                elif re.search(r"\s(-d|-F|--data\S*)\s", part):
                    method = "POST"
                else:
                    method = "GET"
                calls.append((method, url.group(1)))
    return calls


def test_every_route_has_a_curl_example(openapi: dict) -> None:
    calls = _curl_calls(_read(DOCS / "api.md"))
    assert calls, "no curl examples found in docs/api.md"
    missing = []
    for method, path in _routes(openapi):
        if path.startswith("/v1/runners/"):
            continue
        rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(path)) + "$")
        if not any(m == method and rx.match(p) for m, p in calls):
            missing.append(f"{method} {path}")
    assert missing == [], f"routes without a curl example in docs/api.md: {missing}"


def test_the_non_schema_endpoints_are_documented() -> None:
    api = _read(DOCS / "api.md")
    for thing in ("/v1/stream", "/metrics", "/openapi.json", "artifact_base64", "multipart",
                  "sha256sum", "base64", "follow=true", "next_cursor", '"error"'):
        assert thing in api, thing


# -- (c) the settings -----------------------------------------------------------------------

def test_every_setting_is_documented() -> None:
    text = _read(DOCS / "configuration.md")
    missing = [f"SEQUENCE_{f.name.upper()}" for f in dataclasses.fields(Settings)
               if f"SEQUENCE_{f.name.upper()}" not in text]
    assert missing == [], f"settings missing from docs/configuration.md: {missing}"


# -- (d) links --------------------------------------------------------------------------------

def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _without_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(path: Path) -> list[str]:
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _without_code(_read(path)))


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"`|\*|_(?=\w)|(?<=\w)_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _read(path)
    found: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if not _relative(target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not (doc.parent / file_part).exists():
            broken.append(target)
    assert broken == [], f"{doc.name}: links to missing files: {broken}"


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_anchors_of_relative_links_exist(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if not _relative(target) or "#" not in target:
            continue
        file_part, anchor = target.split("#", 1)
        dest = (doc.parent / file_part) if file_part else doc
        if dest.suffix == ".md" and dest.exists() and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{doc.name}: links to missing anchors: {broken}"


# -- (e) the examples -------------------------------------------------------------------------

#: The hosted-strategy examples (examples/algos/ holds WASM algos: tests/algos/test_examples.py).
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "algos")


def test_there_are_examples() -> None:
    assert (EXAMPLES / "hosted_strategy_prediction.py").is_file()
    assert {p.name for p in EXAMPLE_DIRS} >= {"taker", "two_leg", "daemon", "config_slots"}


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_folder_is_deployable(folder: Path) -> None:
    assert (folder / "main.py").is_file(), f"{folder.name}: no main.py"
    cfg = parse_config(folder / "Sequence.toml")
    assert cfg.name and validate_name(cfg.name) is None, cfg.name
    assert cfg.runtime == "python"
    assert validate_entrypoint(cfg.entrypoint) is None and (folder / cfg.entrypoint).is_file()
    assert not [k for k in [*cfg.env, *cfg.secrets] if k.upper().startswith("SEQUENCE_")]
    compile(_read(folder / "main.py"), str(folder / "main.py"), "exec")


def test_examples_readme_lists_every_example() -> None:
    readme = _read(EXAMPLES / "README.md")
    for folder in EXAMPLE_DIRS:
        assert f"({folder.name}/)" in readme, folder.name
    assert "(hosted_strategy_prediction.py)" in readme
    assert "(algos/)" in readme


def test_quickstart_deploys_the_seed_sequence_toml_verbatim() -> None:
    from tests.acceptance.harness import SEED_TOML

    quickstart = _read(DOCS / "quickstart.md")
    assert SEED_TOML in quickstart
    assert "sequence strategy deploy /tmp/my-strategy --start" in quickstart
    assert "sequence strategy logs e2e-pred-test --follow" in quickstart


def test_bracketed_words_in_help_texts_survive_rendering() -> None:
    """Rich reads ``[word]`` in a help text as a style tag and drops it (``prefixed [sequence]``
    rendered as ``prefixed``): every bracketed word a command's help writes must reach the
    rendered reference, which is the --help output."""
    import re

    import click

    from sequence.cli.app import command

    # Each command's section of the reference: "## `sequence algo logs`" up to the next.
    sections = {m[0]: " ".join(m[1].split()) for m in
                re.findall(r"^## `([^`]+)`\n(.*?)(?=^## `|\Z)", (ROOT / "docs" / "cli.md").read_text(), re.M | re.S)}
    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        rendered = sections.get(path, "")
        for text in texts:
            for word in re.findall(r"\\?\[[A-Za-z][\w.-]*\]", text):
                if word.lstrip("\\") not in rendered:
                    missing.append(f"{path}: {word}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(command(), "sequence")
    assert not missing, "escape these as \\\\[word] in the help text: " + ", ".join(missing)
