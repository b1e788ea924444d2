"""The Jenkins shared library (jenkins/vars/*.groovy), run by Groovy the way a Pipeline runs
it: every pipeline step is a recorder, while ``sh`` really runs its script and so the real
CLI of this checkout. Checked: command lines, hostile values kept as data, the build's
environment reaching the CLI, a failing CLI turned into ``error`` with its own message,
archiving, and the project's Jenkinsfile.

One JVM runs every case (tests/wrappers/groovy/harness.groovy) and prints JSON; the tests
assert on it. A shim in front of the CLI logs the words and environment each CLI process
received, then becomes the CLI. The variables Jenkins sets for a build (BUILD_TAG,
JENKINS_NODE_COOKIE, BRANCH_NAME, CHANGE_*, ...) are set here as Jenkins sets them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VARS = ROOT / "jenkins" / "vars"
HARNESS = Path(__file__).parent / "groovy" / "harness.groovy"
JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
STEPS = ("ciIntegration", "ciContext", "ciDockerBuild", "ciDockerRun", "ciCache", "ciCleanup")
UNDER_CI = os.environ.get("CI") == "true"

pytestmark = [
    pytest.mark.skipif(
        shutil.which("groovy") is None and not UNDER_CI,
        reason="groovy is not installed (./dev setup installs it)",
    ),
    # The module's one JVM run of every case happens once, on one worker.
    pytest.mark.xdist_group("jenkins"),
]

# Anything the shell would run if a value reached it unquoted leaves this file behind.
PWNED = Path(f"/tmp/pwned-{uuid.uuid4().hex[:12]}")
INJECTION = f"$(touch {PWNED})"
# Where the library's repository is, as an administrator sets CI_INTEGRATION_GIT_URL.
LIBRARY_URL = "https://git.example.com/ci/ci-integration.git"
HOSTILE = f"it's {INJECTION} `touch {PWNED}` dir"
HOSTILE_KEY = f"k'ey {INJECTION} x"
BUSYBOX_BINARY = Path("/bin/busybox")
BUILT_IMAGE = "ci-integration-test/jenkins-wrapper"
CREDENTIALS = {
    "jenkins-api": {"username": "janitor", "password": "jenkins-api-token-1234"},
    "github-token": {"secret": "ghp-test-token-5678"},
    # The README's: moto takes any key.
    "ci-cache-key-id": {"secret": "readme-access-key"},
    "ci-cache-secret": {"secret": "readme-secret-key"},
    "ci-integration-janitor": {"username": "janitor", "password": "jenkins-api-token-1234"},
}


def shell_word(value: str) -> str:
    """What the library makes of a value: single quotes, each ' written as '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def groovy_string(value: str) -> str:
    """A single-quoted Groovy literal: nothing in it is interpolated."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


@dataclasses.dataclass
class Outcome:
    """One case: what the script returned or the error it ended with, every step called,
    every ``sh`` run, the build log, and what each CLI process received."""

    ok: bool
    returned: Any
    error: str | None
    steps: list[dict[str, Any]]
    sh: list[dict[str, Any]]
    unexpected_sh: list[str]
    log: str
    env: dict[str, str]
    cli: list[dict[str, Any]]
    workspace: Path
    store: Path
    trace: str | None = None

    def step_names(self) -> list[str]:
        return [step["step"] for step in self.steps]

    def step_args(self, name: str) -> list[list[Any]]:
        return [step["args"] for step in self.steps if step["step"] == name]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.cli]


@dataclasses.dataclass
class Case:
    """A Groovy script run like a Jenkinsfile's scripted part. ``@STORE@`` in it becomes the
    case's own store folder; ``@SOURCE@`` in an env value a copy of the package's sources
    (``@SOURCE_URL@`` its file: URL, a git repository);
    an env value of None removes the variable. ``allow_sh`` replaces the patterns of the
    scripts ``sh`` may run (the library's CLI runs)."""

    name: str
    script: str
    env: dict[str, str | None] = dataclasses.field(default_factory=dict)
    files: dict[str, str | Path] = dataclasses.field(default_factory=dict)
    is_unix: bool = True
    allow_sh: list[str] | None = None
    nodes: list[str] = dataclasses.field(default_factory=list)  # what nodesByLabel finds


class Suite:
    """Lays out each case's workspace and environment, runs the harness once, and hands
    out the outcomes."""

    def __init__(self, root: Path, docker_host: str | None) -> None:
        self.root = root
        self.docker_host = docker_host  # the engine's, when one answers
        self.engine = docker_host is not None
        self.home = root / "home"
        self.home.mkdir()
        self.shim = root / "bin" / "ci-integration"
        self.cases: list[Case] = []
        self.outcomes: dict[str, Outcome] = {}
        self.jenkinsfile: dict[str, Any] = {}
        self._write_shim()
        self.source = self._copy_source()

    def _copy_source(self) -> Path:
        """The package's sources, for pip to install from a path: pip builds in the source
        folder (build/, *.egg-info), which in the checkout would race other installs."""
        source = self.root / "source"
        source.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "ci_integration",
            source / "ci_integration",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        # A repository too, as the library's is: the default install clones it.
        git = ["git", "-C", str(source), "-c", "user.name=test", "-c", "user.email=t@example.com"]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "source"], check=True)
        return source

    def _write_shim(self) -> None:
        cli = Path(sys.executable).with_name("ci-integration")
        target = [str(cli)] if cli.exists() else [sys.executable, "-m", "ci_integration"]
        self.shim.parent.mkdir()
        self.shim.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(
                f"""\
                import json, os, sys
                record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
                with open(os.environ["CI_INTEGRATION_TEST_CALLS"], "a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\\n")
                target = {target!r}
                os.execv(target[0], target + sys.argv[1:])
                """
            )
        )
        self.shim.chmod(0o755)

    def case_dir(self, name: str) -> Path:
        return self.root / "cases" / name

    def workspace(self, name: str) -> Path:
        # A space in the path, as a Jenkins job named with one has.
        return self.case_dir(name) / "work space"

    def store(self, name: str) -> Path:
        return self.case_dir(name) / "store"

    def env(self, name: str) -> dict[str, str]:
        """What Jenkins gives a multibranch build of main on an agent, plus the shim."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "JENKINS_HOME": "/var/lib/jenkins",
            "JENKINS_URL": "http://127.0.0.1:9/",
            "JOB_NAME": "ci-integration/main",
            "JOB_BASE_NAME": "main",
            "BUILD_NUMBER": "7",
            "BUILD_ID": "7",
            "BUILD_TAG": "jenkins-ci-integration-main-7",
            "BUILD_URL": "http://127.0.0.1:9/job/ci-integration/job/main/7/",
            "BRANCH_NAME": "main",
            "BRANCH_IS_PRIMARY": "true",
            "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
            "NODE_NAME": "agent-1",
            "EXECUTOR_NUMBER": "0",
            "JENKINS_NODE_COOKIE": "3e2b4b0c-node-cookie",
            "JENKINS_SERVER_COOKIE": "durable-0123456789abcdef",
            "WORKSPACE": str(self.workspace(name)),
            "CI_INTEGRATION_CLI": str(self.shim),
            "CI_INTEGRATION_TEST_CALLS": str(self.case_dir(name) / "cli-calls.jsonl"),
            "CI_INTEGRATION_CACHE_DIR": str(self.case_dir(name) / "default-store"),
            "DOCKER_HOST": f"unix://{self.root}/no-engine.sock",
        }

    def add(self, case: Case) -> None:
        self.cases.append(case)

    def run(self) -> None:
        requests = []
        for case in self.cases:
            workspace = self.workspace(case.name)
            workspace.mkdir(parents=True)
            self.store(case.name).mkdir()
            for relative, content in case.files.items():
                path = workspace / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copy(content, path)
                else:
                    path.write_text(content)
            env = self.env(case.name)
            for name, value in case.env.items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = (
                        value.replace("@STORE_PATH@", str(self.store(case.name)))
                        .replace("@SOURCE_URL@", self.source.as_uri())
                        .replace("@SOURCE@", str(self.source))
                        .replace("@ENGINE@", self.docker_host or "")
                    )
            requests.append({
                "name": case.name,
                "script": case.script.replace("@STORE@", groovy_string(str(self.store(case.name)))),
                "env": env,
                "cwd": str(workspace),
                "isUnix": case.is_unix,
                "allowSh": case.allow_sh,
                "nodes": case.nodes,
            })  # fmt: skip
        request = {
            "vars": str(VARS),
            # The library's two ways to start the CLI: the shim named by CI_INTEGRATION_CLI,
            # and the python of the virtual environment it installs.
            "allowSh": [
                rf"\Q{shell_word(str(self.shim))}\E",
                r"\Q/bin/python' '-m' 'ci_integration'\E",
            ],
            "credentials": CREDENTIALS,
            "threads": 6,
            "shTimeoutSeconds": 240,
            "cases": requests,
            "jenkinsfile": str(ROOT / "Jenkinsfile"),
        }
        request_file = self.root / "request.json"
        request_file.write_text(json.dumps(request))
        env = dict(os.environ)
        if JAVA_17.is_dir():
            # Debian's groovy fails under newer JVMs that may be the default.
            env["JAVA_HOME"] = str(JAVA_17)
        done = subprocess.run(
            ["groovy", str(HARNESS), str(request_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=280,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"the Groovy harness failed ({done.returncode}):\n{done.stderr[-4000:]}")
        output = json.loads(done.stdout.strip().splitlines()[-1])
        self.jenkinsfile = output["jenkinsfile"]
        for name, result in output["cases"].items():
            calls = self.case_dir(name) / "cli-calls.jsonl"
            lines = calls.read_text().splitlines() if calls.exists() else []
            self.outcomes[name] = Outcome(
                ok=result["ok"],
                returned=result.get("returned"),
                error=result.get("error"),
                steps=result["steps"],
                sh=result["sh"],
                unexpected_sh=result["unexpectedSh"],
                log=result["log"],
                env=result["env"],
                cli=[json.loads(line) for line in lines],
                workspace=self.workspace(name),
                store=self.store(name),
                trace=result.get("trace"),
            )

    def __getitem__(self, name: str) -> Outcome:
        outcome = self.outcomes[name]
        assert outcome.trace is None, outcome.trace
        return outcome


def _engine_client(request: pytest.FixtureRequest):
    """The session's engine, when one answers and busybox-static is here to build an
    image from; under CI or with CI_INTEGRATION_REQUIRE_ENGINE, not both is a failure."""
    try:
        client = request.getfixturevalue("docker_client")
    except pytest.skip.Exception:
        return None
    if not BUSYBOX_BINARY.is_file():
        message = f"no {BUSYBOX_BINARY}: apt-get install busybox-static"
        if UNDER_CI or os.environ.get("CI_INTEGRATION_REQUIRE_ENGINE"):
            pytest.fail(message)
        return None
    return client


@pytest.fixture(scope="module")
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Suite]:  # fmt: skip
    if shutil.which("groovy") is None:
        pytest.fail("groovy is missing under CI: ./dev setup installs it")
    client = _engine_client(request)
    docker_host = None
    if client is not None:
        docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    runs = Suite(tmp_path_factory.mktemp("jenkins"), docker_host)
    for case in CASES + README_CASES:
        runs.add(case)
    if client is not None:
        endpoint = request.getfixturevalue("s3_endpoint")
        readme_bucket(endpoint)
        for case in ENGINE_CASES + README_ENGINE_CASES:
            if case in README_ENGINE_CASES:
                case = dataclasses.replace(
                    case, script=case.script.replace(README_ENDPOINT, endpoint)
                )
            runs.add(case)
    runs.run()
    yield runs
    if client is not None:
        for repository in (BUILT_IMAGE, "example/toolchain"):
            for image in client.images.list(name=repository):
                for tag in image.tags:
                    client.images.remove(tag, force=True)
    assert not PWNED.exists(), f"a hostile value was run by a shell: {PWNED} exists"


def readme_bucket(endpoint: str) -> None:
    """The README's bucket, on moto."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="readme-access-key",
                      aws_secret_access_key="readme-secret-key")  # fmt: skip
    if "ci-cache" not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="ci-cache")


CASES = [
    Case(
        "context_change_request",
        "return ciContext()",
        env={
            "BRANCH_NAME": "PR-12",
            "BRANCH_IS_PRIMARY": None,
            "CHANGE_ID": "12",
            "CHANGE_TARGET": "main",
            "CHANGE_BRANCH": "feature/login",
            "CHANGE_URL": "https://github.com/example/app/pull/12",
        },
    ),
    Case(
        "context_with_env",
        """
        def context = withEnv(['CI_INTEGRATION_DEFAULT_BRANCH=main']) { ciContext() }
        return [context: context, after: env.CI_INTEGRATION_DEFAULT_BRANCH]
        """,
        env={"BRANCH_NAME": "feature/y", "BRANCH_IS_PRIMARY": None},
    ),
    Case(
        "cache_hostile_paths",
        f"""
        String path = {groovy_string(HOSTILE)}
        def seen = null
        def result = ciCache(paths: [path], key: 'hostile-{{os}}', restoreKeys: ['hostile-'],
                             store: @STORE@) {{ restored ->
            seen = restored
            writeFile(file: path + '/built.txt', text: 'built by the body')
            'body result'
        }}
        def again = dir('second checkout') {{
            ciCache.restore(paths: path, key: 'hostile-{{os}}', store: @STORE@)
        }}
        return [seen: seen, result: result, again: again]
        """,
        files={f"{HOSTILE}/seed.txt": "seed"},
    ),
    Case(
        "cache_body_fails",
        """
        ciCache(paths: ['out'], key: 'failing-{os}', store: @STORE@) {
            writeFile(file: 'out/partial.o', text: 'half a build')
            error('compiler crashed')
        }
        """,
        files={"out/old.o": "old"},
    ),
    Case(
        "catch_all",
        "ciCache(paths: ['out'], key: 'unexpected-{os}', store: @STORE@) { sh 'make' }",
        files={"out/a.o": "a"},
    ),
    Case(
        "hostile_key",
        f"ciCache.save(paths: ['out'], key: {groovy_string(HOSTILE_KEY)}, store: @STORE@)",
        files={"out/a.o": "a"},
    ),
    Case(
        "archive_store",
        "ciCache(paths: ['out'], key: 'archived-{os}', store: '.ci-cache', archive: true) { 'ok' }",
        files={"out/a.o": "a"},
    ),
    # No JENKINS_URL: the store reads only its folder (and says so), saves, and is archived.
    Case(
        "jenkins_store",
        """
        dir('checkout') {
            ciCache(paths: ['out'], key: 'kept-{os}', store: 'jenkins://',
                    jenkinsCredentialsId: 'jenkins-api') { 'ok' }
        }
        """,
        env={"JENKINS_URL": None},
        files={"checkout/out/a.o": "a"},
    ),
    Case(
        "jenkins_store_read_only",
        """
        ciCache(paths: ['out'], key: 'kept-{os}', store: 'jenkins:///ci/cache',
                readOnly: true) { 'ok' }
        """,
        env={"JENKINS_URL": None},
        files={"out/a.o": "a"},
    ),
    Case(
        "archive_needs_relative_store",
        "ciCache(paths: ['out'], key: 'k', store: '/var/cache/ci', archive: true) { 'never' }",
    ),
    Case(
        "unknown_argument",
        "ciCache(paths: ['out'], key: 'k', restoreKey: 'typo') { 'never' }",
    ),
    Case("missing_argument", "ciDockerBuild(context: 'app')"),
    Case("no_body", "ciCache(paths: ['out'], key: 'k')"),
    Case("not_unix", "ciContext()", is_unix=False),
    Case("outside_node", "ciContext()", env={"WORKSPACE": None}),
    Case(
        "build_command_line",
        f"""
        ciDockerBuild(tag: 'example/app:1', context: 'app dir', dockerfile: 'app dir/Dockerfile',
            target: 'app', buildArgs: [PLAIN: 'x', HOSTILE: {groovy_string(INJECTION)}],
            exports: ['app:/out=dist'], store: @STORE@, docker: '/usr/bin/docker',
            builder: 'legacy', mountCache: false, mountCacheExclude: 'pip',
            mountHelperImage: 'busybox:1', readOnly: true, strict: true)
        """,
        files={"app dir/Dockerfile": "FROM scratch AS app\n"},
    ),
    Case("build_defaults", "ciDockerBuild(tag: 'example/app:1')", files={"Dockerfile": ""}),
    Case(
        "run_command_line",
        f"""
        ciDockerRun(image: 'example/app:1',
            command: ['sh', '-c', 'echo "$GREETING"', {groovy_string(INJECTION)}],
            env: [GREETING: "it's me", EMPTY: ''], volumes: ['ccache:/ccache'],
            user: '1000:1000', workdir: '/src', network: 'none', memory: '1g', cpus: 1.5,
            shmSize: '256m', gpus: 'all', stopTimeout: 5, keep: true, init: false,
            ccache: '.ccache', ccacheKey: 'ccache-{{os}}', store: @STORE@, strict: true)
        """,
    ),
    Case("run_string_command", "ciDockerRun(image: 'example/app:1', command: 'make -j4 test')"),
    Case(
        "cleanup_credentials",
        """
        ciCleanup(maxAge: '2h', grace: '30s', dryRun: true,
                  jenkinsCredentialsId: 'jenkins-api', githubCredentialsId: 'github-token')
        """,
    ),
    Case("cleanup_defaults", "ciCleanup()"),
    Case(
        "generic_command",
        """
        ciCache.save(paths: ['out'], key: 'listed-{os}', store: @STORE@)
        String listing = ciIntegration(args: ['cache', 'list', '--json', '--store=' + @STORE@],
                                       returnStdout: true)
        ciIntegration(args: ['cache', 'list', '--store=' + @STORE@])
        return listing
        """,
        files={"out/a.o": "a"},
    ),
    Case("usage_error", "ciIntegration(args: ['cache', 'nonsense'])"),
    # The default install, looked at but not run: the catch-all stops the only sh.
    Case(
        "install_default_spec",
        "ciContext()",
        env={
            "CI_INTEGRATION_CLI": None,
            "CI_INTEGRATION_GIT_URL": LIBRARY_URL,
            "library.ci-integration.version": "v1",
            "CI_INTEGRATION_STORE": "s3://b/p",
        },
        allow_sh=[],
    ),
    # Nothing says where the CLI comes from: one line that says what to set.
    Case("install_nowhere", "ciContext()", env={"CI_INTEGRATION_CLI": None}, allow_sh=[]),
    # The library's own repository at the library's version, installed for real.
    Case(
        "install_from_the_library_repository",
        "return ciContext().provider",
        env={
            "CI_INTEGRATION_CLI": None,
            "CI_INTEGRATION_GIT_URL": "@SOURCE_URL@",
            "library.ci-integration.version": "main",
        },
    ),
    # pip fails: the step says so, as it would of the CLI failing.
    Case(
        "install_fails",
        "ciContext(pipSpec: '/nonexistent/ci-integration')",
        env={"CI_INTEGRATION_CLI": None},
    ),
    # The real install: a virtual environment in WORKSPACE@tmp, pip installing this checkout.
    Case(
        "install_from_path",
        """
        def first = ciContext()
        def second = ciContext()
        return [first.provider, second.provider]
        """,
        env={"CI_INTEGRATION_CLI": None, "CI_INTEGRATION_PIP_SPEC": "@SOURCE@"},
    ),
]

# A build, then runs of what it built, in one case, on the engine of this pytest process.
ENGINE_CASES = [
    Case(
        "engine_build_and_run",
        f"""
        def report = ciDockerBuild(tag: '{BUILT_IMAGE}:1', context: 'app', store: @STORE@)
        ciDockerRun(image: '{BUILT_IMAGE}:1', env: [GREETING: "it's me"],
            command: ['sh', '-c', 'echo "greeting=$GREETING"; echo "argument=$0"',
                      {groovy_string(INJECTION)}])
        def failure = null
        try {{
            ciDockerRun(image: '{BUILT_IMAGE}:1',
                        command: ['sh', '-c', 'echo about to fail; exit 3'])
        }} catch (exception) {{
            failure = exception.message
        }}
        return [report: report, failure: failure]
        """,
        env={"DOCKER_HOST": "@ENGINE@"},
        files={
            "app/Dockerfile": (
                "FROM scratch\n"
                "COPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                "RUN echo built > /built.txt\n"
            ),
            "app/busybox": BUSYBOX_BINARY,
        },
    ),
]


# The README's Jenkins examples, as written but for the line that loads the library (the
# harness has loaded it, as Jenkins does before the script runs) and the S3 endpoint
# (moto's, for minio.example.com).
README_GROOVY = re.findall(r"^```groovy\n(.*?)^```", (ROOT / "README.md").read_text(),
                           re.MULTILINE | re.DOTALL)  # fmt: skip
LOADS_THE_LIBRARY = re.compile(r"^@Library\('([^']+)'\) _\n", re.MULTILINE)
README_ENDPOINT = "https://minio.example.com"
README_FILES: dict[str, str | Path] = {
    "docker/Dockerfile": (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "COPY make /bin/make\n"
        'RUN ["/bin/chmod", "+x", "/bin/make"]\n'
    ),
    "docker/busybox": BUSYBOX_BINARY,
    # `make -j4 test`: compiles into $CCACHE_DIR, so that ciCache has something to keep.
    "docker/make": '#!/bin/sh\nmkdir -p "$CCACHE_DIR" && echo object >"$CCACHE_DIR/main.o"'
    ' && echo "make $*: tests passed"\n',
    "src/main.c": "int main(void) { return 0; }\n",
}


def readme_case(index: int, **settings: Any) -> Case:
    return Case(f"readme_{index}", LOADS_THE_LIBRARY.sub("", README_GROOVY[index]), **settings)


README_CASES = [
    readme_case(0, env={"CI_INTEGRATION_STORE": "@STORE_PATH@"}),
    readme_case(1),
    readme_case(2),
]
README_ENGINE_CASES = [
    readme_case(
        3,
        env={"DOCKER_HOST": "@ENGINE@", "AWS_REGION": "us-east-1"},
        files=README_FILES,
    ),
    readme_case(4, env={"DOCKER_HOST": "@ENGINE@"}, nodes=["agent-1", "agent-2"]),
]


def cli_env(outcome: Outcome, index: int = 0) -> dict[str, str]:
    return outcome.cli[index]["env"]


def test_context_is_the_cli_report_of_a_change_request(suite: Suite) -> None:
    outcome = suite["context_change_request"]
    assert outcome.ok, outcome.error
    context = outcome.returned
    assert context["provider"] == "jenkins"
    assert context["branch"] == "feature/login"
    assert context["base_branch"] == "main"
    assert context["is_pull_request"] is True
    assert context["pr_number"] == 12
    assert context["scope"] == "pr-12"
    assert context["scope_chain"][:2] == ["pr-12", "branch-main"]
    assert context["build_url"] == "http://127.0.0.1:9/job/ci-integration/job/main/7/"
    assert outcome.argvs() == [["context", "--json"]]
    assert outcome.step_names() == ["isUnix", "sh", "readJSON"]
    (sh,) = outcome.step_args("sh")
    assert sh[0]["returnStdout"] is True
    assert sh[0]["label"] == "ci-integration context"
    assert outcome.step_args("readJSON")[0][0]["returnPojo"] is True
    # The build's own variables reach the CLI unchanged.
    env = cli_env(outcome)
    assert env["CHANGE_ID"] == "12"
    assert env["JENKINS_NODE_COOKIE"] == "3e2b4b0c-node-cookie"
    assert env["BUILD_TAG"] == "jenkins-ci-integration-main-7"
    assert outcome.cli[0]["cwd"] == str(outcome.workspace)


def test_with_env_reaches_the_cli(suite: Suite) -> None:
    outcome = suite["context_with_env"]
    assert outcome.ok, outcome.error
    context = outcome.returned["context"]
    assert context["default_branch"] == "main"
    assert context["scope_chain"][-1] == "branch-main"
    assert cli_env(outcome)["CI_INTEGRATION_DEFAULT_BRANCH"] == "main"
    assert outcome.returned["after"] is None
    assert "withEnv" in outcome.step_names()


def test_cache_restores_before_the_body_and_saves_after_it_with_hostile_paths(
    suite: Suite,
) -> None:
    outcome = suite["cache_hostile_paths"]
    assert outcome.ok, outcome.error
    store = f"--store={outcome.store}"
    assert outcome.argvs() == [
        ["cache", "restore", "--json", "--key=hostile-{os}", "--restore-key=hostile-", store,
         "--", HOSTILE],
        ["cache", "save", "--json", "--key=hostile-{os}", "--restore-key=hostile-", store,
         "--", HOSTILE],
        ["cache", "restore", "--json", "--key=hostile-{os}", store, "--", HOSTILE],
    ]  # fmt: skip
    assert outcome.returned["seen"]["cache_hit_kind"] == "miss"
    assert outcome.returned["result"] == "body result"
    assert outcome.returned["again"]["cache_hit_kind"] == "exact"
    second = outcome.workspace / "second checkout"
    assert outcome.cli[2]["cwd"] == str(second)
    assert (second / HOSTILE / "built.txt").read_text() == "built by the body"
    assert (second / HOSTILE / "seed.txt").read_text() == "seed"
    # The value appears in the script only as one single-quoted word.
    assert shell_word(HOSTILE) in outcome.sh[0]["script"]
    assert not PWNED.exists()


def test_cache_saves_when_the_body_fails_and_the_body_failure_wins(suite: Suite) -> None:
    outcome = suite["cache_body_fails"]
    assert not outcome.ok
    assert outcome.error == "compiler crashed"
    assert [argv[:2] for argv in outcome.argvs()] == [["cache", "restore"], ["cache", "save"]]
    save = outcome.sh[1]
    assert save["status"] == 0
    report = json.loads(save["stdout"].split("\n", 2)[2])
    assert report["saved"] is True
    assert report["files"] == 2


def test_an_unexpected_sh_fails_the_case(suite: Suite) -> None:
    outcome = suite["catch_all"]
    assert not outcome.ok
    assert outcome.error == "unexpected sh: make"
    assert outcome.unexpected_sh == ["make"]
    # The body failed, so the cache was saved all the same.
    assert [argv[:2] for argv in outcome.argvs()] == [["cache", "restore"], ["cache", "save"]]


def test_a_hostile_key_is_data_and_the_cli_message_fails_the_step(suite: Suite) -> None:
    outcome = suite["hostile_key"]
    assert not outcome.ok
    assert outcome.argvs() == [
        ["cache", "save", "--json", f"--key={HOSTILE_KEY}", f"--store={outcome.store}",
         "--", "out"],
    ]  # fmt: skip
    assert outcome.error == (
        f'ciCache.save: invalid cache key "{HOSTILE_KEY}": use letters, digits and '
        ". _ + = @ : ~ , - /"
    )
    assert f'ci-integration: error: invalid cache key "{HOSTILE_KEY}"' in outcome.log
    assert outcome.step_names()[-1] == "error"
    assert not PWNED.exists()


def test_archive_keeps_the_store_folder_with_the_build(suite: Suite) -> None:
    outcome = suite["archive_store"]
    assert outcome.ok, outcome.error
    assert outcome.returned == "ok"
    assert outcome.step_args("archiveArtifacts") == [
        [{"artifacts": ".ci-cache/**", "allowEmptyArchive": True}]
    ]
    names = outcome.step_names()
    assert names.index("archiveArtifacts") > [i for i, n in enumerate(names) if n == "sh"][-1]
    assert any(path.is_file() for path in (outcome.workspace / ".ci-cache").rglob("*"))


def test_a_jenkins_store_archives_the_folder_the_cli_wrote(suite: Suite) -> None:
    outcome = suite["jenkins_store"]
    assert outcome.ok, outcome.error
    checkout = outcome.workspace / "checkout"
    assert [call["cwd"] for call in outcome.cli] == [str(checkout), str(checkout)]
    assert all("--store=jenkins://" in argv for argv in outcome.argvs())
    folder = outcome.workspace / ".ci-integration-cache"
    (entry,) = (folder / "entries" / "branch-main").iterdir()
    assert entry.name.startswith("kept-")
    assert any((folder / "blobs").rglob("*"))
    # Archived from the workspace, where the CLI wrote it and the next build reads it.
    assert outcome.step_args("dir")[-1][0] == str(outcome.workspace)
    assert outcome.step_args("archiveArtifacts") == [[{
        "artifacts": ".ci-integration-cache/**",
        "excludes": ".ci-integration-cache/tmp/**,.ci-integration-cache/lock",
        "allowEmptyArchive": True,
    }]]  # fmt: skip
    names = outcome.step_names()
    assert names.index("archiveArtifacts") > [i for i, n in enumerate(names) if n == "sh"][-1]
    env = cli_env(outcome)
    assert env["JENKINS_USER"] == "janitor" and env["JENKINS_TOKEN"] == "jenkins-api-token-1234"
    assert "jenkins-api-token-1234" not in outcome.log
    assert "restoring only from" in outcome.log


def test_a_read_only_jenkins_store_saves_nothing_and_archives_nothing(suite: Suite) -> None:
    outcome = suite["jenkins_store_read_only"]
    assert outcome.ok, outcome.error
    assert outcome.argvs()[1][:4] == ["cache", "save", "--json", "--key=kept-{os}"]
    assert "--read-only" in outcome.argvs()[1]
    assert "this job is read-only (--read-only)" in outcome.log
    assert outcome.step_args("archiveArtifacts") == []
    assert not (outcome.workspace / "ci" / "cache" / "entries" / "branch-main").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "archive_needs_relative_store",
            "ciCache.restore: archive needs store to be a relative folder inside the "
            "workspace, such as '.ci-cache'",
        ),
        ("unknown_argument", "ciCache.restore: unknown argument restoreKey (see ciCache.txt)"),
        (
            "missing_argument",
            "ciDockerBuild: the argument tag is required (see ciDockerBuild.txt)",
        ),
        (
            "no_body",
            "ciCache: give it a body, or call ciCache.restore(...) and ciCache.save(...)",
        ),
        ("not_unix", "ciContext: ci-integration runs on Linux and macOS agents only"),
        ("outside_node", "ciContext: call it inside a node block: it needs a workspace"),
    ],
)
def test_bad_calls_fail_before_any_sh(suite: Suite, case: str, message: str) -> None:
    outcome = suite[case]
    assert not outcome.ok
    assert outcome.error == message
    assert outcome.sh == []
    assert outcome.cli == []


def test_build_command_line(suite: Suite) -> None:
    outcome = suite["build_command_line"]
    assert outcome.argvs() == [
        [
            "build", "--json", "--tag=example/app:1", "--file=app dir/Dockerfile",
            "--target=app", "--build-arg=PLAIN=x", f"--build-arg=HOSTILE={INJECTION}",
            "--export=app:/out=dist", f"--store={outcome.store}", "--docker=/usr/bin/docker",
            "--builder=legacy", "--no-mount-cache", "--mount-cache-exclude=pip",
            "--mount-helper-image=busybox:1", "--read-only", "--strict", "--", "app dir",
        ]
    ]  # fmt: skip
    # No engine answers here: the CLI's own message fails the step.
    assert not outcome.ok
    assert outcome.error.startswith(
        f"ciDockerBuild: no Docker engine answers at unix://{suite.root}/no-engine.sock"
    )
    assert suite["build_defaults"].argvs() == [
        ["build", "--json", "--tag=example/app:1", "--", "."]
    ]


def test_run_command_line(suite: Suite) -> None:
    outcome = suite["run_command_line"]
    assert outcome.argvs() == [
        [
            "run", "--env=GREETING=it's me", "--env=EMPTY=", "--volume=ccache:/ccache",
            "--user=1000:1000", "--workdir=/src", "--network=none", "--memory=1g",
            "--cpus=1.5", "--shm-size=256m", "--gpus=all", "--stop-timeout=5", "--keep",
            "--no-init", "--ccache=.ccache", "--ccache-key=ccache-{os}",
            f"--store={outcome.store}", "--strict", "example/app:1",
            "--", "sh", "-c", 'echo "$GREETING"', INJECTION,
        ]
    ]  # fmt: skip
    assert not outcome.ok
    assert "no Docker engine answers" in outcome.error
    # The container's output streams to the log; only the status comes back.
    assert outcome.step_args("readJSON") == []
    assert suite["run_string_command"].argvs() == [
        ["run", "example/app:1", "--", "sh", "-c", "make -j4 test"]
    ]


def test_cleanup_binds_credentials_for_the_cli_only(suite: Suite) -> None:
    outcome = suite["cleanup_credentials"]
    assert outcome.argvs() == [["cleanup", "--max-age=2h", "--grace=30s", "--dry-run"]]
    assert outcome.step_args("usernamePassword") == [
        [{"credentialsId": "jenkins-api", "usernameVariable": "JENKINS_USER",
          "passwordVariable": "JENKINS_TOKEN"}]
    ]  # fmt: skip
    assert outcome.step_args("string") == [
        [{"credentialsId": "github-token", "variable": "GITHUB_TOKEN"}]
    ]
    assert "withCredentials" in outcome.step_names()
    env = cli_env(outcome)
    assert env["JENKINS_USER"] == "janitor"
    assert env["JENKINS_TOKEN"] == "jenkins-api-token-1234"
    assert env["GITHUB_TOKEN"] == "ghp-test-token-5678"
    assert "JENKINS_TOKEN" not in outcome.env
    assert not outcome.ok
    assert "no Docker engine answers" in outcome.error
    defaults = suite["cleanup_defaults"]
    assert defaults.argvs() == [["cleanup", "--max-age=1d", "--grace=1m"]]
    assert "withCredentials" not in defaults.step_names()


def test_any_command_through_ci_integration(suite: Suite) -> None:
    outcome = suite["generic_command"]
    assert outcome.ok, outcome.error
    (entry,) = json.loads(outcome.returned)
    assert entry["key"].startswith("listed-")
    # Without returnStdout the CLI's output goes to the log.
    assert re.search(r"^branch-main\tlisted-", outcome.log, re.MULTILINE)
    usage = suite["usage_error"]
    assert not usage.ok
    assert usage.error.startswith("ciIntegration: argument ACTION: invalid choice: 'nonsense'")


def test_default_install_is_the_library_s_repository_at_its_version(suite: Suite) -> None:
    outcome = suite["install_default_spec"]
    (script,) = outcome.unexpected_sh
    venv = f"{outcome.workspace}@tmp/ci-integration/venv"
    assert f"ci_venv={shell_word(venv)}" in script
    # The version the library was loaded at, the S3 client for an s3:// store.
    spec = f"ci-integration[s3] @ git+{LIBRARY_URL}@v1"
    assert f"ci_spec={shell_word(spec)}" in script
    # A ref may move under the same name: installed again by the next build.
    assert f"ci_installed={shell_word(spec + ' for jenkins-ci-integration-main-7')}" in script
    assert '-m pip install --quiet --disable-pip-version-check "$ci_spec"' in script
    assert f"{shell_word(venv + '/bin/python')} '-m' 'ci_integration' 'context' '--json'" in script


def test_with_nowhere_to_install_from_the_step_says_what_to_set(suite: Suite) -> None:
    outcome = suite["install_nowhere"]
    assert not outcome.ok and outcome.unexpected_sh == []
    assert outcome.error == (
        "ciContext: nothing says where ci-integration comes from: set CI_INTEGRATION_GIT_URL"
        " to the library's repository, or pipSpec (or CI_INTEGRATION_PIP_SPEC), or cli"
    )


def test_install_from_the_library_s_own_repository(suite: Suite) -> None:
    outcome = suite["install_from_the_library_repository"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log[-3000:]}"
    assert outcome.returned == "jenkins"
    assert f"installing git+{suite.source.as_uri()}@main for " in outcome.log


def test_a_failed_install_fails_the_step_with_a_message(suite: Suite) -> None:
    outcome = suite["install_fails"]
    assert not outcome.ok
    venv = f"{outcome.workspace}@tmp/ci-integration/venv"
    assert outcome.error == (
        f"ciContext: could not install /nonexistent/ci-integration into {venv} (see the log above)"
    )
    assert outcome.cli == []
    assert not Path(venv, "ci-integration.installed").exists()


def test_install_from_a_path_once_per_build(suite: Suite) -> None:
    outcome = suite["install_from_path"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log[-3000:]}"
    assert outcome.returned == ["jenkins", "jenkins"]
    # Once: the second step found the environment in place (the trace echoes the line too).
    assert len(re.findall(r"^ci-integration: installing ", outcome.log, re.MULTILINE)) == 1
    venv = Path(f"{outcome.workspace}@tmp/ci-integration/venv")
    # A path may change under the same name: it is installed again by the next build.
    assert (venv / "ci-integration.installed").read_text() == (
        f"{suite.source} for jenkins-ci-integration-main-7\n"
    )


def test_build_then_run_on_the_engine(suite: Suite) -> None:
    if not suite.engine:
        pytest.skip("no Docker engine answers")
    outcome = suite["engine_build_and_run"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log}"
    report = outcome.returned["report"]
    assert report["image"] == f"{BUILT_IMAGE}:1"
    assert report["image_id"].startswith("sha256:")
    assert [stage["saved"] for stage in report["stages"]] == ["uploaded"]
    # Hostile words reach the container as data; the output streams to the log.
    assert "greeting=it's me\n" in outcome.log
    assert f"argument={INJECTION}\n" in outcome.log
    assert not PWNED.exists()
    # A command that fails fails the step with its exit code.
    assert outcome.returned["failure"] == "ciDockerRun: ci-integration run exited with code 3"
    assert "about to fail\n" in outcome.log


def find_calls(node: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found = [node] if node["name"] == name else []
    for child in node["children"]:
        found += find_calls(child, name)
    return found


def stage_steps(tree: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    (node,) = [s for s in find_calls(tree, "stage") if s["args"] == [stage]]
    (steps,) = node["children"]
    return steps["children"]


def test_jenkinsfile_compiles_and_loads_the_library_from_jenkins_folder(suite: Suite) -> None:
    tree = suite.jenkinsfile
    assert "error" not in tree, tree.get("error")
    (library,) = find_calls(tree, "library")
    assert library["args"][0]["retriever"] == {
        "call": "legacySCM",
        "args": [{"libraryPath": "jenkins/", "scm": "${scm}"}],
    }
    assert library["args"][0]["identifier"].startswith("ci-integration@")
    (environment,) = find_calls(tree, "environment")
    assert environment["assignments"]["CI_INTEGRATION_PIP_SPEC"] == "${WORKSPACE}"

    stages = [s["args"][0] for s in find_calls(tree, "stage")]
    assert stages == ["Setup", "Lint", "Unit tests", "Integration tests", "Image"]
    assert [s["args"] for s in stage_steps(tree, "Lint")] == [["./dev lint"]]
    assert any("tests/unit" in s["args"][0] for s in stage_steps(tree, "Unit tests"))
    integration = str([s["args"] for s in stage_steps(tree, "Integration tests")])
    assert "tests/integration" in integration
    assert "tests/wrappers" in integration
    builds = [s for s in stage_steps(tree, "Image") if s["name"] == "ciDockerBuild"]
    assert builds[-1]["args"][0]["context"] == "examples/multistage"
    (always,) = find_calls(tree, "always")
    assert "ciCleanup" in [step["name"] for step in always["children"]]
    used = {node["name"] for node in find_calls_prefix(tree, "ci")}
    assert used <= set(STEPS)


def find_calls_prefix(node: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    found = [node] if node["name"].startswith(prefix) else []
    for child in node["children"]:
        found += find_calls_prefix(child, prefix)
    return found


def defaults_keys(source: str) -> list[tuple[str, bool]]:
    """Each key of the defaults maps in a step's source, and whether a comment (or the key
    before it, for keys that share a comment) introduces it."""
    keys = []
    previous = ""
    inside = False
    for line in source.splitlines():
        stripped = line.strip()
        if re.search(r"Map (defaults|DEFAULTS|SETTINGS) = \[$", stripped):
            inside = True
        elif inside and stripped == "]":
            inside = False
        elif inside and (match := re.match(r"(\w+): .*,$", stripped)):
            commented = previous.startswith("//") or bool(re.match(r"\w+: ", previous))
            keys.append((match.group(1), commented))
        previous = stripped
    return keys


@pytest.mark.parametrize("step", STEPS)
def test_every_step_documents_its_arguments(step: str) -> None:
    source = (VARS / f"{step}.groovy").read_text()
    help_text = (VARS / f"{step}.txt").read_text()
    assert re.search(r"^def call\(Map config = \[:\]", source, re.MULTILINE)
    for key, commented in defaults_keys(source):
        assert commented, f"{step}: {key} has no comment"
        assert f"<code>{key}</code>" in help_text, f"{step}.txt does not list {key}"


def test_the_readme_has_its_jenkins_examples() -> None:
    assert len(README_GROOVY) == len(README_CASES) + len(README_ENGINE_CASES)
    for block in README_GROOVY:
        for name in LOADS_THE_LIBRARY.findall(block):
            assert name == "ci-integration"  # the name the steps install by


def test_readme_nightly_prune(suite: Suite) -> None:
    outcome = suite["readme_0"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log[-3000:]}"
    assert outcome.argvs() == [["cache", "prune", f"--store={outcome.store}", "--max-age=14d",
                                "--keep-last=3", "--max-size=50G"]]  # fmt: skip


def test_readme_library_loading(suite: Suite) -> None:
    assert suite["readme_1"].ok
    loading = suite["readme_2"]
    assert loading.ok, loading.error
    (arguments,) = loading.step_args("library")
    assert arguments[0]["identifier"] == "ci-integration@main"
    assert arguments[0]["retriever"]["libraryPath"] == "jenkins/"


def test_readme_build_and_test_pipeline(suite: Suite) -> None:
    if not suite.engine:
        pytest.skip("no Docker engine answers")
    outcome = suite["readme_3"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log[-4000:]}"
    commands = [argv[0] if argv[0] != "cache" else " ".join(argv[:2]) for argv in outcome.argvs()]
    assert commands == ["context", "build", "cache restore", "run", "cache save", "cleanup"]
    assert "make -j4 test: tests passed" in outcome.log
    # The credentials reached the CLI through the environment block, the endpoint moto's.
    saving = next(call for call in outcome.cli if call["argv"][:2] == ["cache", "save"])
    assert saving["env"]["AWS_ACCESS_KEY_ID"] == "readme-access-key"
    assert "saved ccache-" in outcome.log


def test_readme_cleanup_on_every_agent(suite: Suite) -> None:
    if not suite.engine:
        pytest.skip("no Docker engine answers")
    outcome = suite["readme_4"]
    assert outcome.ok, f"{outcome.error}\n{outcome.log[-4000:]}"
    assert outcome.argvs() == [["cleanup", "--max-age=12h", "--grace=1m"]] * 2
    assert [call["env"]["NODE_NAME"] for call in outcome.cli] == ["agent-1", "agent-2"]
    assert {call["env"]["JENKINS_USER"] for call in outcome.cli} == {"janitor"}
