from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci_integration.errors import UsageError
from ci_integration.images import dockerfile
from ci_integration.images.context_hash import DockerIgnore, hash_sources, stage_keys


def write(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        (["*.log"], "app.log", True),
        (["*.log"], "logs/app.log", False),
        (["*.log"], "app.log.txt", False),
        (["build/"], "build", True),
        (["build/"], "build/out/main.o", True),
        (["build/"], "src/build/x", False),
        (["**/node_modules"], "node_modules/left-pad/index.js", True),
        (["**/node_modules"], "web/app/node_modules/a.js", True),
        (["**/node_modules"], "web/node_modules_old/a.js", False),
        (["*.log", "!important.log"], "important.log", False),
        (["*.log", "!important.log"], "debug.log", True),
        (["!important.log", "*.log"], "important.log", True),
        (["build", "!build/keep.txt"], "build/keep.txt", False),
        (["build", "!build/keep.txt"], "build/drop.txt", True),
        (["*", "!src"], "src/main.py", False),
        (["*", "!src"], "README.md", True),
        (["/abs"], "abs/file", True),
        (["/abs"], "sub/abs", False),
        (["./docs"], "docs/index.md", True),
        (["docs/**/*.md"], "docs/a/b/c.md", True),
        (["docs/**/*.md"], "docs/c.md", True),
        (["docs/**/*.md"], "c.md", False),
        (["a?c", "[x-z].txt"], "abc", True),
        (["a?c", "[x-z].txt"], "y.txt", True),
        (["a?c", "[x-z].txt"], "a.txt", False),
        (["# a comment", "", "   "], "# a comment", False),
        (["  *.tmp  "], "x.tmp", True),
        (["*.log"], "./app.log", True),
        (["*"], ".", False),
    ],
)
def test_dockerignore_patterns(patterns, path, ignored):
    assert DockerIgnore(patterns).ignores(path) is ignored


@pytest.mark.parametrize("pattern", ["!", "[abc", "trailing\\"])
def test_malformed_dockerignore_pattern(pattern):
    with pytest.raises(UsageError, match=r"\.dockerignore"):
        DockerIgnore([pattern])


def test_dockerfile_dockerignore_takes_precedence(tmp_path):
    write(
        tmp_path,
        {
            ".dockerignore": "*.txt\n",
            "docker/app.Dockerfile": "FROM a\n",
            "docker/app.Dockerfile.dockerignore": "*.md\n",
            "docker/other.Dockerfile": "FROM a\n",
        },
    )
    beside = DockerIgnore.load(tmp_path, tmp_path / "docker" / "app.Dockerfile")
    assert (beside.ignores("a.md"), beside.ignores("a.txt")) == (True, False)
    plain = DockerIgnore.load(tmp_path, tmp_path / "docker" / "other.Dockerfile")
    assert (plain.ignores("a.md"), plain.ignores("a.txt")) == (False, True)
    assert DockerIgnore.load(tmp_path).ignores("a.txt")
    assert not DockerIgnore.load(tmp_path / "docker").ignores("a.txt")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "src/main.py": "print(1)\n",
            "src/util.py": "X = 1\n",
            "src/notes.md": "notes\n",
            "src/debug.log": "noise\n",
            "requirements.txt": "requests\n",
            "README.md": "readme\n",
        },
    )
    return tmp_path


SOURCES = ["src", "requirements.txt"]
IGNORE_LOGS = DockerIgnore(["*.log", "**/*.log"])


def test_hash_sources_follows_copied_content_names_and_exec_bit(context):
    before = hash_sources(context, SOURCES, IGNORE_LOGS)
    assert len(before) == 64
    assert before == hash_sources(context, list(reversed(SOURCES)), IGNORE_LOGS)

    (context / "src" / "util.py").write_text("X = 2\n")
    content_changed = hash_sources(context, SOURCES, IGNORE_LOGS)
    (context / "src" / "util.py").rename(context / "src" / "helpers.py")
    renamed = hash_sources(context, SOURCES, IGNORE_LOGS)
    (context / "src" / "helpers.py").chmod(0o755)
    executable = hash_sources(context, SOURCES, IGNORE_LOGS)
    (context / "src" / "helpers.py").chmod(0o775)
    group_writable = hash_sources(context, SOURCES, IGNORE_LOGS)
    (context / "src" / "empty").mkdir()
    # COPY copies an empty folder too, so the image would differ.
    with_folder = hash_sources(context, SOURCES, IGNORE_LOGS)
    changes = {before, content_changed, renamed, executable, group_writable, with_folder}
    assert len(changes) == 6


def test_hash_sources_ignores_what_is_not_copied(context):
    before = hash_sources(context, SOURCES, IGNORE_LOGS)
    (context / "src" / "debug.log").write_text("other noise\n")
    (context / "src" / "trace.log").write_text("new ignored file\n")
    (context / "README.md").write_text("not copied\n")
    (context / "src" / "main.py").touch()
    assert hash_sources(context, SOURCES, IGNORE_LOGS) == before
    assert hash_sources(context, SOURCES, DockerIgnore()) != before


def test_hash_sources_globs_as_copy_does(context):
    python_only = hash_sources(context, ["src/*.py"], DockerIgnore())
    (context / "src" / "notes.md").write_text("changed\n")
    assert hash_sources(context, ["src/*.py"], DockerIgnore()) == python_only
    (context / "src" / "new.py").write_text("")
    assert hash_sources(context, ["src/*.py"], DockerIgnore()) != python_only
    assert hash_sources(context, ["/src/../src/[mn]*.py"], DockerIgnore()) == hash_sources(
        context, ["src/main.py", "src/new.py"], DockerIgnore()
    )


def test_hash_sources_counts_missing_sources_without_failing(context):
    missing = hash_sources(context, ["requirements.txt", "setup.cfg"], DockerIgnore())
    assert missing != hash_sources(context, ["requirements.txt"], DockerIgnore())
    (context / "setup.cfg").write_text("[metadata]\n")
    assert hash_sources(context, ["requirements.txt", "setup.cfg"], DockerIgnore()) != missing
    assert hash_sources(context / "absent", ["."], DockerIgnore())


def test_hash_sources_symlinks(context):
    (context / "link").symlink_to("src/main.py")
    (context / "tree").mkdir()
    (context / "tree" / "inner").symlink_to("../src/util.py")
    (context / "tree" / "loop").symlink_to("loop")
    top, nested = (hash_sources(context, [s], DockerIgnore()) for s in ("link", "tree"))

    (context / "src" / "util.py").write_text("changed\n")
    # Inside a copied folder a symlink is copied as a link: its target text is what counts.
    assert hash_sources(context, ["tree"], DockerIgnore()) == nested
    (context / "tree" / "inner").unlink()
    (context / "tree" / "inner").symlink_to("../src/main.py")
    assert hash_sources(context, ["tree"], DockerIgnore()) != nested

    # A source that is itself a symlink is followed, as COPY does.
    (context / "src" / "main.py").write_text("changed\n")
    assert hash_sources(context, ["link"], DockerIgnore()) != top


def test_hash_sources_of_the_whole_context_skips_ignored_folders(context):
    write(context, {"node_modules/pkg/index.js": "1", "web/node_modules/x.js": "2"})
    ignore = DockerIgnore(["**/node_modules", "*.md"])
    before = hash_sources(context, ["."], ignore)
    write(context, {"node_modules/pkg/index.js": "changed", "web/node_modules/y.js": "3"})
    (context / "README.md").write_text("changed\n")
    assert hash_sources(context, ["."], ignore) == before
    (context / "requirements.txt").write_text("flask\n")
    assert hash_sources(context, ["."], ignore) != before


PIPELINE = """\
ARG PY=3.12
FROM python:${PY} AS a
COPY a.txt /
FROM python:${PY} AS b
COPY b.txt /
FROM a AS c
RUN true
FROM b AS d
RUN true
FROM scratch AS final
COPY --from=c / /c
COPY --from=d / /d
"""


def keys_for(context: Path, build_args=None, image_ids=None) -> dict[str, str]:
    build_args = build_args or {}
    parsed = dockerfile.parse(PIPELINE, build_args)
    return stage_keys(
        parsed, parsed.stages_for(None), context, build_args, DockerIgnore(), image_ids or {}
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    write(tmp_path, {"a.txt": "a", "b.txt": "b"})
    return tmp_path


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {ref for ref in before if before[ref] != after[ref]}


def test_stage_keys_are_64_hex_and_stable(pipeline):
    keys = keys_for(pipeline)
    assert set(keys) == {"a", "b", "c", "d", "final"}
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in keys.values())
    assert len(set(keys.values())) == 5
    assert keys_for(pipeline) == keys


def test_a_file_copied_by_one_stage_changes_it_and_its_dependents(pipeline):
    before = keys_for(pipeline)
    (pipeline / "b.txt").write_text("b2")
    assert changed(before, keys_for(pipeline)) == {"b", "d", "final"}


def test_build_args_and_base_image_ids_change_keys(pipeline):
    before = keys_for(pipeline)
    assert changed(before, keys_for(pipeline, {"PY": "3.11"})) == set(before)
    assert changed(before, keys_for(pipeline, {"UNUSED": "1"})) == set(before)
    pinned = keys_for(pipeline, image_ids={"python:3.12": "sha256:" + "1" * 64})
    assert changed(before, pinned) == set(before)
    repinned = keys_for(pipeline, image_ids={"python:3.12": "sha256:" + "2" * 64})
    assert changed(pinned, repinned) == set(before)


def test_a_bind_mounted_context_file_changes_the_key(tmp_path):
    write(tmp_path, {"go.sum": "a", "other.txt": "x"})
    parsed = dockerfile.parse("FROM golang\nRUN --mount=source=go.sum,target=go.sum go build\n")

    def key() -> str:
        return stage_keys(parsed, parsed.stages, tmp_path, {}, DockerIgnore())["0"]

    before = key()
    (tmp_path / "other.txt").write_text("y")
    assert key() == before
    (tmp_path / "go.sum").write_text("b")
    assert key() != before


def test_stage_keys_of_some_stages_still_cover_their_dependencies(pipeline):
    parsed = dockerfile.parse(PIPELINE)
    only_d = stage_keys(parsed, [parsed.stage("d")], pipeline, {}, DockerIgnore())
    assert only_d == {"d": keys_for(pipeline)["d"]}


def test_stage_keys_are_the_same_in_another_process(pipeline):
    script = (
        "import sys; from pathlib import Path\n"
        "from ci_integration.images import dockerfile\n"
        "from ci_integration.images.context_hash import DockerIgnore, stage_keys\n"
        "parsed = dockerfile.parse(sys.stdin.read())\n"
        "keys = stage_keys(parsed, parsed.stages, Path(sys.argv[1]), {}, DockerIgnore())\n"
        "print(keys['final'])\n"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(pipeline)],
        input=PIPELINE,
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    assert result.stdout.strip() == keys_for(pipeline)["final"]
