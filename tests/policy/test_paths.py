"""Path scopes: escapes are denied by the rule named for them; in-scope paths are allowed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bcce.errors import ConfigError
from bcce.policy.paths import MAX_PATH_LENGTH, PathScope

ALLOWED = ("src/**", "docs/*.md", "README.md")
DENIED = ("src/**/*.pem", "src/private/**", "src/café/**")


@dataclass(frozen=True)
class Layout:
    tmp: Path
    workspace: Path
    outside: Path


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    """A workspace with in-scope files and every kind of trap, beside an outside directory."""
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    for directory in (workspace / "src", workspace / "docs", workspace / "secrets", outside):
        directory.mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("print('hi')\n")
    (workspace / "docs" / "guide.md").write_text("# guide\n")
    (workspace / "secrets" / "key.pem").write_text("secret\n")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    (outside / "target.txt").write_text("outside\n")
    (tmp_path / "ws-evil").mkdir()
    (tmp_path / "ws-evil" / "x.py").write_text("")

    src = workspace / "src"
    (src / "link_out.txt").symlink_to(outside / "target.txt")
    (src / "linkdir").symlink_to(outside)
    (src / "to_secret").symlink_to("../secrets/key.pem")
    (src / "loop").symlink_to("loop")
    os.link(outside / "target.txt", src / "hardlinked.txt")
    os.mkfifo(src / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(src / "sock"))
    yield Layout(tmp_path, workspace, outside)


@pytest.fixture
def scope(layout: Layout) -> PathScope:
    return PathScope(layout.workspace, ALLOWED, DENIED)


# (id, path, expected rule); "{tmp}" and "{ws}" are replaced by the layout's directories
ESCAPES = [
    ("dot-dot", "../outside/target.txt", "path.outside_workspace"),
    ("dot-dot-from-allowed-dir", "src/../../outside/target.txt", "path.outside_workspace"),
    ("absolute-system-file", "/etc/passwd", "path.outside_workspace"),
    ("absolute-outside", "{tmp}/outside/target.txt", "path.outside_workspace"),
    ("sibling-with-prefix", "{tmp}/ws-evil/x.py", "path.outside_workspace"),
    ("sibling-by-dot-dot", "../ws-evil/x.py", "path.outside_workspace"),
    ("proc-self-root", "/proc/self/root/etc/passwd", "path.outside_workspace"),
    ("proc-self-cwd", "/proc/self/cwd/src/app.py", "path.outside_workspace"),
    ("dev-null", "/dev/null", "path.outside_workspace"),
    ("symlink-out", "src/link_out.txt", "path.symlink_escape"),
    ("symlinked-dir", "src/linkdir/target.txt", "path.symlink_escape"),
    ("new-file-in-symlinked-dir", "src/linkdir/new.py", "path.symlink_escape"),
    ("symlink-then-dot-dot", "src/linkdir/../secret.txt", "path.symlink_escape"),
    ("symlink-loop", "src/loop", "path.invalid"),
    ("fnmatch-would-match", "src/../etc/passwd", "path.not_allowed"),
    ("symlink-to-unallowed-inside", "src/to_secret", "path.not_allowed"),
    ("not-allowed-dir", "secrets/key.pem", "path.not_allowed"),
    ("glob-is-one-level", "docs/sub/guide.md", "path.not_allowed"),
    ("workspace-root", ".", "path.not_allowed"),
    ("hard-link", "src/hardlinked.txt", "path.hardlink"),
    ("fifo", "src/pipe", "path.device"),
    ("socket", "src/sock", "path.device"),
    ("denied-glob", "src/keys/id.pem", "path.denied"),
    ("denied-dir", "src/private/notes.txt", "path.denied"),
    ("denied-other-case", "src/PRIVATE/notes.txt", "path.denied"),
    ("denied-extension-other-case", "src/KEY.PEM", "path.denied"),
    ("denied-decomposed-unicode", "src/cafe\u0301/menu.txt", "path.denied"),
    ("nul-byte", "src/app.py\x00.txt", "path.invalid"),
    ("newline", "src/a\nb.py", "path.invalid"),
    ("empty", "", "path.invalid"),
    ("backslash-separators", "src\\..\\..\\outside", "path.invalid"),
    ("division-slash", "src\u2215..\u2215..\u2215etc\u2215passwd", "path.invalid"),
    ("fullwidth-solidus", "src\uff0f..\uff0fx", "path.invalid"),
    ("zero-width-non-joiner", ".g\u200cit/config", "path.invalid"),
    ("bidi-override", "src/\u202eyp.exe", "path.invalid"),
    ("too-long", "src/" + "a" * MAX_PATH_LENGTH, "path.invalid"),
]


def _expand(path: str, layout: Layout) -> str:
    return path.replace("{tmp}", str(layout.tmp)).replace("{ws}", str(layout.workspace))


def test_the_escape_corpus_is_large_enough() -> None:
    assert len(ESCAPES) >= 20


@pytest.mark.parametrize(
    ("path", "rule"), [pytest.param(path, rule, id=name) for name, path, rule in ESCAPES]
)
def test_escape_attempt_is_denied_by_its_rule(
    scope: PathScope, layout: Layout, path: str, rule: str
) -> None:
    decision = scope.check(_expand(path, layout), for_write=True)

    assert not decision.allowed
    assert decision.rule == rule, decision.reason


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("src/app.py", id="existing-file"),
        pytest.param("src/new_module.py", id="new-file"),
        pytest.param("src/newpkg/deep/new.py", id="new-file-in-new-dirs"),
        pytest.param("{ws}/src/app.py", id="absolute-inside"),
        pytest.param("./src/app.py", id="dot-slash"),
        pytest.param("src/./app.py", id="dot-component"),
        pytest.param("src/missing/../app.py", id="dot-dot-staying-inside"),
        pytest.param("docs/guide.md", id="second-allowed-glob"),
        pytest.param("README.md", id="new-top-level-file"),
        pytest.param("src/café/../app.py", id="unicode-name"),
    ],
)
def test_in_scope_path_may_be_written(scope: PathScope, layout: Layout, path: str) -> None:
    decision = scope.check(_expand(path, layout), for_write=True)

    assert decision.allowed, f"{decision.rule}: {decision.reason}"
    assert decision.rule == "path.allowed"


def test_an_allowed_directory_may_be_read(scope: PathScope) -> None:
    assert scope.check("src", for_write=False).allowed


def test_path_objects_are_accepted(scope: PathScope) -> None:
    assert scope.check(Path("src") / "app.py", for_write=False).allowed


def test_a_hard_linked_file_may_be_read_but_not_written(scope: PathScope) -> None:
    assert scope.check("src/hardlinked.txt", for_write=False).allowed
    assert scope.check("src/hardlinked.txt", for_write=True).rule == "path.hardlink"


def test_a_device_file_is_denied() -> None:
    decision = PathScope("/dev", ["**"]).check("null", for_write=False)

    assert decision.rule == "path.device"


def test_allowed_globs_match_case_exactly(scope: PathScope) -> None:
    assert scope.check("SRC/app.py", for_write=False).rule == "path.not_allowed"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(".git/config", id="git-config"),
        pytest.param(".git/hooks/pre-commit", id="git-hook"),
        pytest.param(".GIT/config", id="git-other-case"),
        pytest.param(".git", id="git-file-of-a-worktree"),
        pytest.param("vendor/lib/.git/config", id="nested-repository"),
        pytest.param(".claude/settings.json", id="claude-settings"),
        pytest.param(".mcp.json", id="mcp-servers"),
    ],
)
def test_protected_paths_cannot_be_written_even_when_allowed(layout: Layout, path: str) -> None:
    scope = PathScope(layout.workspace, ["**"])

    assert scope.check(path, for_write=True).rule == "path.protected"


def test_protected_paths_can_be_read_when_allowed(layout: Layout) -> None:
    assert PathScope(layout.workspace, ["**"]).check(".git/config", for_write=False).allowed


def test_protection_can_be_replaced(layout: Layout) -> None:
    scope = PathScope(layout.workspace, ["**"], protected=())

    assert scope.check(".git/config", for_write=True).allowed


def test_a_workspace_given_through_a_symlink_accepts_both_spellings(layout: Layout) -> None:
    alias = layout.tmp / "ws-alias"
    alias.symlink_to(layout.workspace)
    scope = PathScope(alias, ALLOWED)

    assert scope.workspace == str(layout.workspace)
    assert scope.check(alias / "src" / "app.py", for_write=True).allowed
    assert scope.check(layout.workspace / "src" / "app.py", for_write=True).allowed


def test_check_many_returns_the_first_denial(scope: PathScope) -> None:
    decision = scope.check_many(["src/app.py", "../outside", "/etc/passwd"], for_write=True)

    assert decision.rule == "path.outside_workspace"
    assert "../outside" in decision.reason


def test_check_many_allows_when_every_path_is_in_scope(scope: PathScope) -> None:
    decision = scope.check_many(["src/app.py", "docs/guide.md"], for_write=False)

    assert decision.allowed
    assert decision.reason == "all 2 paths are in scope"


class _Unrepresentable:
    def __fspath__(self) -> str:
        raise RuntimeError("bug")


def test_an_error_inside_the_checker_is_a_deny(scope: PathScope) -> None:
    decision = scope.check(_Unrepresentable(), for_write=False)

    assert decision.rule == "path.internal_error"


def test_a_bytes_path_is_denied(scope: PathScope) -> None:
    decision = scope.check(b"src/app.py", for_write=False)  # type: ignore[arg-type]

    assert decision.rule == "path.invalid"


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("/etc/**", id="absolute"),
        pytest.param("src/../**", id="dot-dot"),
        pytest.param("", id="empty"),
        pytest.param("src/\x00", id="nul"),
    ],
)
def test_an_invalid_pattern_is_a_config_error(layout: Layout, pattern: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PathScope(layout.workspace, [pattern])

    assert caught.value.key == "allowed_paths"


def test_a_missing_workspace_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        PathScope(tmp_path / "missing", ["**"])
