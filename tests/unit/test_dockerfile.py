from __future__ import annotations

import pytest

from ci_integration.errors import UsageError
from ci_integration.images import dockerfile
from ci_integration.images.dockerfile import CacheMount


def summary(parsed: dockerfile.Dockerfile) -> list[dict[str, object]]:
    return [
        {
            "ref": stage.ref,
            "base": stage.base,
            "depends_on": stage.depends_on,
            "external_images": stage.external_images,
            "copy_sources": stage.copy_sources,
        }
        for stage in parsed.stages
    ]


def stage(ref, base, depends_on=(), external_images=(), copy_sources=()):
    return {
        "ref": ref,
        "base": base,
        "depends_on": depends_on,
        "external_images": external_images,
        "copy_sources": copy_sources,
    }


PARSE_CASES = [
    pytest.param(
        """\
FROM golang:1.22 AS Build
RUN go build -o /out ./...
FROM alpine:3.19
COPY --from=BUILD /out /app
FROM build AS test
COPY go.mod go.sum ./
""",
        {},
        [
            stage("build", "golang:1.22", external_images=("golang:1.22",)),
            stage("1", "alpine:3.19", ("build",), ("alpine:3.19",)),
            stage("test", "build", ("build",), copy_sources=("go.mod", "go.sum")),
        ],
        id="named-and-numbered-stages",
    ),
    pytest.param(
        """\
ARG REGISTRY=docker.io
ARG IMAGE=library/python
ARG VERSION
ARG FULL=${REGISTRY}/${IMAGE}
FROM $FULL:${VERSION:-3.12} AS py
FROM ${REGISTRY}/busybox:${UNSET}latest
""",
        {},
        [
            stage(
                "py",
                "docker.io/library/python:3.12",
                external_images=("docker.io/library/python:3.12",),
            ),
            stage("1", "docker.io/busybox:latest", external_images=("docker.io/busybox:latest",)),
        ],
        id="global-args-defaults",
    ),
    pytest.param(
        """\
ARG IMAGE=library/python
ARG VERSION
ARG FULL=docker.io/${IMAGE}
FROM ${FULL}:${VERSION:-3.12}
FROM alpine:${TAG:-3.19}
""",
        {"VERSION": "3.11", "IMAGE": "me/python", "TAG": "edge"},
        [
            stage("0", "docker.io/me/python:3.11", external_images=("docker.io/me/python:3.11",)),
            # TAG is no global ARG: Docker does not let a build arg reach FROM undeclared.
            stage("1", "alpine:3.19", external_images=("alpine:3.19",)),
        ],
        id="build-args-override-arg-defaults",
    ),
    pytest.param(
        """\
FROM node:20 AS deps
COPY package.json ./
FROM deps AS web
COPY --from=0 /node_modules /node_modules
COPY --from=nginx:1.27 /etc/nginx /etc/nginx
COPY --from=scratch / /
RUN --mount=type=bind,from=deps,target=/d true
FROM scratch
COPY --from=1 /dist /
""",
        {},
        [
            stage("deps", "node:20", external_images=("node:20",), copy_sources=("package.json",)),
            stage("web", "deps", ("deps",), ("nginx:1.27",)),
            stage("2", "scratch", ("web",)),
        ],
        id="copy-from-index-name-image",
    ),
    pytest.param(
        """\
FROM alpine
RUN apk add \\
    # the compiler
    gcc \\

    make
COPY a \\
  # the second source
  b /dst/
""",
        {},
        [stage("0", "alpine", external_images=("alpine",), copy_sources=("a", "b"))],
        id="continuations-with-comments-and-blank-lines",
    ),
    pytest.param(
        """\
# escape=`
FROM mcr.microsoft.com/windows/servercore AS win
COPY C:\\src\\app `
     C:\\src\\lib C:\\dst\\
RUN dir c:\\
""",
        {},
        [
            stage(
                "win",
                "mcr.microsoft.com/windows/servercore",
                external_images=("mcr.microsoft.com/windows/servercore",),
                copy_sources=("C:\\src\\app", "C:\\src\\lib"),
            )
        ],
        id="backtick-escape",
    ),
    pytest.param(
        """\
FROM alpine AS gen
RUN <<EOF sh
FROM evil
COPY --from=nowhere / /
EOF
RUN <<-"END" cat > /a && <<'TWO' cat > /b
\tFROM still-body
\tEND
FROM body-too
TWO
COPY <<CONF /etc/app.conf
FROM not-a-stage
CONF
COPY real.txt /
""",
        {},
        [stage("gen", "alpine", external_images=("alpine",), copy_sources=("real.txt",))],
        id="heredoc-bodies-are-not-instructions",
    ),
    pytest.param(
        """\
FROM alpine
COPY ["with space.txt", "conf/*.yml", "/dst/"]
ADD ["https://example.com/x.tgz", "local.tgz", "/opt/"]
ADD git@github.com:me/repo.git /src
""",
        {},
        [
            stage(
                "0",
                "alpine",
                external_images=("alpine",),
                copy_sources=("with space.txt", "conf/*.yml", "local.tgz"),
            )
        ],
        id="json-form-and-remote-sources",
    ),
    pytest.param(
        """\
ARG APP=api
FROM scratch AS base
ENV DIR=services
FROM base
ARG APP
ARG EXTRA=${DIR}/extra
COPY ${DIR}/$APP ${EXTRA} /srv/
""",
        {},
        [
            stage("base", "scratch"),
            stage("1", "base", ("base",), copy_sources=("services/api", "services/extra")),
        ],
        id="copy-sources-see-arg-and-inherited-env",
    ),
    pytest.param(
        """\
FROM scratch
ARG SRC=default
ARG UNSET
COPY $SRC ${UNSET:-fallback} /
""",
        {"SRC": "given"},
        [stage("0", "scratch", copy_sources=("given", "fallback"))],
        id="build-args-override-stage-arg-defaults",
    ),
    pytest.param(
        """\
FROM alpine
ARG TARGETARCH
COPY bin/${TARGETARCH}/tool $FROM_BASE_IMAGE_ENV /usr/bin/
""",
        {},
        # Values only the build knows: the source could be anything, so the whole context.
        [stage("0", "alpine", external_images=("alpine",), copy_sources=(".", "."))],
        id="unknowable-variables-mean-whole-context",
    ),
]


@pytest.mark.parametrize(("text", "build_args", "expected"), PARSE_CASES)
def test_parse(text, build_args, expected):
    assert summary(dockerfile.parse(text, build_args)) == expected


def test_instructions_keep_flags_lines_and_joined_arguments():
    parsed = dockerfile.parse(
        "FROM --platform=$BUILDPLATFORM golang AS build\n"
        "\n"
        "COPY --chown=1:1 --link \\\n"
        "     --from=other a b\n"
        'RUN --mount=type=secret,id=npm --network="none" make\n'
    )
    build = parsed.stage("build")
    # BUILDPLATFORM comes from the engine: left for it to fill.
    assert build.platform == "$BUILDPLATFORM"
    copy, run = build.instructions
    assert (copy.keyword, copy.arguments, copy.line) == ("COPY", "a b", 3)
    assert copy.flags == (("chown", "1:1"), ("link", ""), ("from", "other"))
    assert copy.flag("from") == "other"
    assert copy.flag("chmod") is None
    assert (run.line, run.arguments, run.flag("network")) == (5, "make", "none")
    ended = dockerfile.parse("FROM a\nRUN --network=none -- --help\n").stages[0].instructions[0]
    assert (ended.flags, ended.arguments) == ((("network", "none"),), "--help")
    assert build.from_line == 1
    assert build.text.splitlines()[-1].endswith("make")


def test_cache_mounts():
    parsed = dockerfile.parse(
        "FROM alpine AS tools\n"
        "FROM alpine\n"
        "ARG CACHE_ID=pip\n"
        "RUN --mount=type=cache,target=/root/.cache/go \\\n"
        "    --mount=type=cache,id=$CACHE_ID,target=/pip,sharing=locked,uid=1000,gid=100,"
        "mode=0755,from=tools,source=/seed \\\n"
        "    --mount=type=bind,target=/src \\\n"
        '    --mount="type=cache,dst=/apt,sharing=private" true\n'
    )
    final = parsed.stages[1]
    assert final.cache_mounts == (
        CacheMount(id="/root/.cache/go", target="/root/.cache/go"),
        CacheMount(
            id="pip",
            target="/pip",
            sharing="locked",
            uid=1000,
            gid=100,
            mode="0755",
            from_stage="tools",
            source="/seed",
        ),
        CacheMount(id="/apt", target="/apt", sharing="private"),
    )
    assert final.depends_on == ("tools",)


def test_bind_mounts_of_the_context_are_sources():
    parsed = dockerfile.parse(
        "FROM alpine AS deps\n"
        "FROM golang\n"
        "ARG MOD=go.mod\n"
        "RUN --mount=type=bind,source=go.sum,target=go.sum --mount=target=/m,src=$MOD \\\n"
        "    --mount=type=bind,target=/src --mount=type=bind,from=deps,source=/x,target=/y \\\n"
        "    --mount=type=cache,target=/c --mount=type=secret,id=token go build\n"
    )
    final = parsed.stages[1]
    assert final.mount_sources == ("go.sum", "go.mod", ".")
    assert final.copy_sources == ()
    assert final.depends_on == ("deps",)


def test_syntax_directive_only_at_the_very_top():
    assert dockerfile.parse("# syntax=docker/dockerfile:1.7\nFROM a\n").syntax == (
        "docker/dockerfile:1.7"
    )
    assert dockerfile.parse("#SYNTAX = x/y:1 \nFROM a\n").syntax == "x/y:1"
    assert dockerfile.parse("# a comment\n# syntax=docker/dockerfile:1.7\nFROM a\n").syntax is None
    assert dockerfile.parse("FROM a\n# syntax=docker/dockerfile:1.7\n").syntax is None
    # An unknown directive is a comment, and ends the directives.
    assert dockerfile.parse("# lang=en\n# syntax=docker/dockerfile:1.7\nFROM a\n").syntax is None


def test_escape_directive_after_a_comment_is_a_comment():
    # The backslash stays the escape character, so the backtick continues nothing.
    with pytest.raises(UsageError, match="line 5: unknown instruction 'hi'"):
        dockerfile.parse("# hello\n# escape=`\nFROM a\nRUN echo `\n  hi\n")
    assert dockerfile.parse("# escape=`\nFROM a\nRUN echo `\n  hi\n").stages[0].instructions[
        0
    ].arguments == ("echo   hi")


DIAMOND = """\
FROM alpine AS base
FROM base AS left
FROM base AS right
FROM alpine AS unused
FROM scratch AS joined
COPY --from=left / /l
COPY --from=right / /r
COPY --from=left / /again
FROM joined AS final
"""


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, ["base", "left", "right", "joined", "final"]),
        ("JOINED", ["base", "left", "right", "joined"]),
        ("left", ["base", "left"]),
        ("3", ["unused"]),
    ],
)
def test_stages_for_a_diamond(target, expected):
    parsed = dockerfile.parse(DIAMOND)
    assert [stage.ref for stage in parsed.stages_for(target)] == expected


def test_lineage_follows_from_only():
    parsed = dockerfile.parse(DIAMOND)
    assert parsed.lineage("final") == ["joined"]  # joined is FROM scratch
    assert parsed.lineage("left") == ["base"]
    assert parsed.lineage("base") == []
    chain = dockerfile.parse("FROM a AS one\nFROM one AS two\nFROM two\nCOPY --from=one / /\n")
    assert chain.lineage("2") == ["two", "one"]


def test_unknown_stage_lists_the_known_ones():
    parsed = dockerfile.parse("FROM a AS one\nFROM b AS Two\nFROM c\n")
    assert parsed.stage("TWO").index == 1
    assert parsed.stage("2").base == "c"
    with pytest.raises(
        UsageError, match=r"unknown stage 'x': the Dockerfile has stages one, two, 2"
    ):
        parsed.stage("x")
    with pytest.raises(UsageError, match="unknown stage"):
        parsed.stages_for("7")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: no FROM instruction"),
        ("# only\nARG X=1\n", "line 2: no FROM instruction"),
        ("ARG A=1\nRUN echo\nFROM a\n", "line 2: RUN before the first FROM"),
        ("FROM a AS one\nCOPY --from=two /x /y\nFROM b AS two\n", "line 2: --from=two names stage"),
        ("FROM a\nRUN true\nCOPY --from=1 /x /y\nFROM b\n", "line 3: --from=1 names stage 1"),
        ("FROM a AS me\nCOPY --from=me /x /y\n", "line 2: --from=me names stage 'me'"),
        ("FROM a\nRUN --mount=type=bind,from=later,target=/x true\nFROM b AS later\n", "line 2:"),
        ("FROM a\n\nRUN <<EOF\necho hi\nEOF \n", "line 3: unterminated heredoc"),
        ("FROM a\nFORM b\n", "line 2: unknown instruction 'FORM'"),
        ("FROM a AS 1st\n", "line 1: invalid stage name '1st'"),
        ("FROM a AS x\nFROM b AS X\n", "line 2: stage name 'x' is taken by line 1"),
        ("FROM a b\n", "line 1: FROM takes an image"),
        ("ARG IMG\nFROM $IMG\n", "line 2: FROM \\$IMG names no image"),
        ("FROM a\nRUN --mount=type=cache true\n", "line 2: a cache mount needs a target"),
        ("FROM a\nRUN --mount=type=cache,target=/x,sharing=wide true\n", "line 2: cache mount sh"),
        ("FROM a\nRUN --mount=type=cache,target=/x,uid=me true\n", "line 2: cache mount uid"),
        ("FROM a\nCOPY onlyone\n", "line 2: COPY needs a source and a destination"),
        ("# escape=x\nFROM a\n", "line 1: invalid escape character"),
        ("# syntax=a\n# syntax=b\nFROM a\n", "line 2: only one syntax parser directive"),
        ("FROM a\nENV NAME\n", "line 2: ENV needs a value"),
        ("FROM ${A:?set-A}\n", "line 1: A: set-A"),
    ],
)
def test_malformed_dockerfiles_name_the_line(text, message):
    with pytest.raises(UsageError, match=f"^Dockerfile {message}"):
        dockerfile.parse(text)


def test_load_reads_a_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "build.Dockerfile"
    path.write_text("FROM alpine AS one\n")
    assert dockerfile.load(path, {}).stage("one").base == "alpine"
    path.write_text("FROM alpine\nNOPE\n")
    with pytest.raises(UsageError, match=f"^{path} line 2: unknown instruction"):
        dockerfile.load(path, {})


def test_load_missing_dockerfile(tmp_path):
    missing = tmp_path / "Dockerfile"
    with pytest.raises(UsageError, match=rf"^Dockerfile not found: {missing} \(pass -f PATH\)$"):
        dockerfile.load(missing, {})
    with pytest.raises(UsageError, match="Dockerfile not found"):
        dockerfile.load(tmp_path, {})


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A-${A}", "1-1"),
        ("${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", "d|d||d"),
        ("${A:+set}|${UNSET:+set}|${EMPTY+set}", "set||set"),
        ("'$A'\"$A\"\\$A", "$A1$A"),
        ("${PATHLIKE#*/}|${PATHLIKE##*/}|${PATHLIKE%/*}|${PATHLIKE%%/*}", "b/c|c|a/b|a"),
        ("cost$", "cost$"),
    ],
)
def test_expand(word, expected):
    values = {"A": "1", "EMPTY": "", "PATHLIKE": "a/b/c"}
    assert dockerfile.expand(word, values.get) == expected
