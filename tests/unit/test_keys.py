from __future__ import annotations

from pathlib import Path

import pytest

from ci_integration import keys
from ci_integration.errors import UsageError

VALUES = {"branch": "feature-x", "scope": "pr-3", "os": "linux-x86_64", "arch": "x86_64"}


def render(template: str, cwd: Path) -> str:
    return keys.render(template, values=VALUES, cwd=cwd)


def test_plain_placeholders(tmp_path):
    assert render("ccache-{os}-{branch}-{scope}", tmp_path) == "ccache-linux-x86_64-feature-x-pr-3"


def test_hash_follows_content_and_names(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.c").write_text("int a;")
    (tmp_path / "Makefile").write_text("all:")
    first = render("k-{hash:src/**/*.c,Makefile}", tmp_path)
    assert first == render("k-{hash:Makefile,src/**/*.c}", tmp_path)
    (tmp_path / "src" / "a.c").write_text("int b;")
    second = render("k-{hash:src/**/*.c,Makefile}", tmp_path)
    (tmp_path / "src" / "a.c").rename(tmp_path / "src" / "b.c")
    third = render("k-{hash:src/**/*.c,Makefile}", tmp_path)
    assert len({first, second, third}) == 3


def test_hash_of_nothing_warns(tmp_path, caplog):
    assert render("k-{hash:*.none}", tmp_path).startswith("k-")
    assert "no file matches" in caplog.text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "empty"),
        ("a b", "invalid cache key"),
        ("/abs", "invalid cache key"),
        ("k" * 513, "at most 512"),
        ("k-{nope}", "unknown placeholder {nope}"),
        ("k-{branch:x}", "unknown placeholder"),
        ("k-{hash:}", "needs globs"),
        ("k-{branch", "unbalanced braces"),
        ("k-\n", "invalid cache key"),
    ],
)
def test_bad_keys_say_what_to_fix(template, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        render(template, tmp_path)


def test_literal_prefix():
    assert keys.literal_prefix("ccache-{os}-{hash:*.c}") == "ccache-"
    assert keys.literal_prefix("{hash:x}") == ""
    assert keys.literal_prefix("plain") == "plain"
