"""Remote stores behind a fault proxy (tests/support/fault_proxy.py) in front of moto's
S3 server, the registry, and the GitHub cache service (v2, the loopback twirp service)
with the azurite storage it signs URLs for: what a job sees when the network or the
service fails. All three follow one policy, store/retry.py.

A transient fault (one reset, one 500, one 429 with Retry-After: 1) is retried and the
save or restore succeeds. A persistent fault makes ``cache save|restore`` exit 0 with
a one-line warning (a restore is a miss) and the job goes on; with --strict, exit 3.
A save cut midway leaves no partial entry. No credential shows in any output.

Measured here with -s (CI_INTEGRATION_STORE_TIMEOUT=1, so a read timeout is 1 s; the
defaults are 30 s for S3, 60 s for a registry and the GitHub cache). "Added" is the
time one save or restore takes beyond a fault-free one (a 2-core machine):

    fault (every request)      backend       outcome                         added (s)
    500                        s3, oci, gha  miss + warning / exit 3 strict  3.5 to 5.3
    connection reset           s3, oci, gha  miss + warning / exit 3 strict  3.5 to 5.3
    429, Retry-After: 1        s3, oci, gha  miss + warning / exit 3 strict  4.0 to 5.5
    429, Retry-After too long  s3, oci, gha  miss + warning at once          0.0
    accepts, never answers     s3, oci, gha  miss + warning / exit 3 strict  2.5 (2 x T + 0.5)
    uploads never answered     s3, oci, gha  save warns                      2.6

    fault (one request)        backend       outcome                         added (s)
    reset, 500                 all           saved / exact hit               0.5 to 0.75
    429, Retry-After: 1        all           saved / exact hit               1.0 (>= 1 asserted)

"Too long" is over 10 s (S3, registry) or 60 s (the GitHub cache, whose limits are
per minute). The bounds asserted: a persistent fault adds at most 5.25 s of backoff
(0.5 + 1 + 2 over 4 attempts, each stretched by up to half at random), or what
Retry-After asks; for a service that never
answers, 2 read timeouts + 0.5 s: a request that timed out twice is not tried again.
One failed request ends the save or restore. So with the default timeouts a dead S3
costs a job at most ~61 s an operation, a dead registry or GitHub cache ~121 s;
CI_INTEGRATION_STORE_TIMEOUT lowers them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_integration.archive import pack
from ci_integration.cli import main
from ci_integration.store import http as gha_http
from ci_integration.store import retry
from tests.store import gha_twirp_service
from tests.store.conftest import (
    BUCKET_PREFIX,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    Registry,
)
from tests.support.fault_proxy import AFTER, CUT, HANG, RESET, SLOW, STATUS, Fault, FaultProxy
from tests.unit.test_dircache import snapshot

READ_TIMEOUT = 1.0  # CI_INTEGRATION_STORE_TIMEOUT in these tests
TOO_LONG = "longer than the store waits"  # made a number for each remote
BACKOFF = (0.5 + 1 + 2) * (1 + retry.JITTER)  # between 4 attempts, at the most
# The CLI's own work and a client's set-up, on a loaded machine: two suites at once on
# 2 cores stretched a hanging save to 4.3 s over its two timeouts. A hang left unbounded
# would take minutes.
SLACK = 5.0
PASSWORD = "registry-password-DO-NOT-PRINT-93c1"
KEY = "deps-1"
PROGRAM = "ci-integration: "  # how each log line starts

# What each persistent fault may add to one save or restore, at most.
PERSISTENT = {
    "500": (Fault(STATUS, status=500), BACKOFF),
    "reset": (Fault(RESET), BACKOFF),
    "429-retry-after-1": (
        Fault(STATUS, status=429, retry_after="1"),
        1 + (1 + 2) * (1 + retry.JITTER),
    ),
    # Longer than the store waits for (10 s; a minute for the GitHub cache): not waited.
    "429-retry-after-too-long": (Fault(STATUS, status=429, retry_after=TOO_LONG), 0.0),
    "hang": (Fault(HANG), 2 * READ_TIMEOUT + 0.5),
}
TRANSIENT = {
    "reset": Fault(RESET, times=1),
    "500": Fault(STATUS, status=500, times=1),
    "429-retry-after-1": Fault(STATUS, status=429, retry_after="1", times=1),
}


@dataclasses.dataclass
class Remote:
    name: str
    proxy: FaultProxy
    url: str
    env: dict[str, str]
    secrets: tuple[str, ...]
    blob_get: str  # a regex of the paths blobs are downloaded from
    blob_upload: tuple[str, str]  # the request that stores a blob's bytes
    entry_put: tuple[str, str]  # the request that writes an entry
    max_retry_after: float = retry.MAX_RETRY_AFTER_SECONDS  # the longest Retry-After waited
    policy: retry.Policy = retry.DEFAULT  # of the requests a fault meets first
    # The waits asked for, where the test shortens them (the GitHub cache's policy
    # waits 24 s over 5 attempts: each wait is made at most CAPPED_WAIT here).
    waits: list[float] | None = None


@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def said(self) -> list[str]:
        """What the run said on stderr, less the line naming its store."""
        return [line for line in self.err.splitlines() if not line.startswith("cache store: ")]

    @property
    def warnings(self) -> list[str]:
        return [line.removeprefix(PROGRAM) for line in self.err.splitlines()
                if line.startswith(f"{PROGRAM}warning: ")]  # fmt: skip


def job_env(base_env: dict[str, str]) -> dict[str, str]:
    return {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main",
            "BRANCH_IS_PRIMARY": "true", retry.TIMEOUT_ENV: f"{READ_TIMEOUT:g}"}  # fmt: skip


@pytest.fixture
def s3_remote(s3_endpoint: str, bucket: str, s3_env: dict[str, str],
              base_env: dict[str, str]) -> Iterator[Remote]:  # fmt: skip
    with FaultProxy(urllib.parse.urlsplit(s3_endpoint).netloc) as proxy:
        env = {**job_env(base_env), **s3_env, "CI_INTEGRATION_S3_ENDPOINT": proxy.url}
        blobs = rf"^/{bucket}/{BUCKET_PREFIX}/blobs/sha256/"
        yield Remote("s3", proxy, f"s3://{bucket}/{BUCKET_PREFIX}", env,
                     (FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN), blobs,
                     ("PUT", blobs), ("PUT", r"/entries/.*\.json"))  # fmt: skip


@pytest.fixture
def oci_remote(registry: Registry, base_env: dict[str, str], tmp_path: Path) -> Iterator[Remote]:
    with FaultProxy(registry.address) as proxy:
        # A login the registry never asks for: it must not show either.
        config = tmp_path / "docker-config"
        config.mkdir()
        auth = json.dumps({"auths": {proxy.address: {"auth": _basic("ci", PASSWORD)}}})
        (config / "config.json").write_text(auth)
        env = {**job_env(base_env), "DOCKER_CONFIG": str(config)}
        url = f"oci://{proxy.address}/ci/faults-{uuid.uuid4().hex[:12]}"
        yield Remote("oci", proxy, url, env, (PASSWORD, _basic("ci", PASSWORD)),
                     r"/blobs/sha256:", ("PUT", r"/blobs/uploads/.*digest="),
                     ("PUT", r"/manifests/e-"))  # fmt: skip


CAPPED_WAIT = 1.0  # a Retry-After of 1 s is still waited for whole


@pytest.fixture
def gha_v2_remote(twirp_service, azurite: str, base_env: dict[str, str],
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:  # fmt: skip
    """The GitHub cache service (v2) and the blob storage it signs URLs for, both
    behind the proxy: its twirp calls routed to the service, the rest to azurite.
    Its clients' waits are recorded and made at most CAPPED_WAIT long."""
    waits: list[float] = []

    def shortened(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(min(seconds, CAPPED_WAIT))

    monkeypatch.setattr(gha_http, "_sleep", shortened)
    service_address = urllib.parse.urlsplit(twirp_service.url).netloc
    with FaultProxy(urllib.parse.urlsplit(azurite).netloc,
                    routes={"/twirp/": service_address}) as proxy:  # fmt: skip
        account = f"{proxy.url}/{gha_twirp_service.ACCOUNT}"
        twirp_service.sign = lambda blob, permissions: gha_twirp_service.blob_sas_url(
            account, blob, permissions)  # fmt: skip
        env = {**job_env(base_env), **gha_twirp_service.job_env(twirp_service),
               "ACTIONS_RESULTS_URL": proxy.url + "/"}  # fmt: skip
        # The service names each blob of storage after the cache key it holds.
        # A save's blobs go up as one bundle, read back by range.
        yield Remote("gha-v2", proxy, "gha://", env, (twirp_service.token,),
                     r"/ci-integration-bundle-", ("PUT", r"/ci-integration-bundle-"),
                     ("PUT", r"/ci-integration-entry-"),
                     max_retry_after=retry.GITHUB_CACHE.max_retry_after,
                     policy=retry.GITHUB_CACHE, waits=waits)  # fmt: skip


@pytest.fixture(params=["s3", "oci", "gha-v2"])
def remote(request: pytest.FixtureRequest) -> Remote:
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_remote")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A job's checkout holding data/: small files, and one of two packs' worth."""
    root = tmp_path / "job"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("alpha\n")
    (root / "data" / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    monkeypatch.chdir(root)
    return root


def run(remote: Remote, capsys: pytest.CaptureFixture[str], action: str, *options: str,
        debug: bool = False) -> Outcome:  # fmt: skip
    """``cache ACTION data`` in this process, against the store behind the proxy."""
    argv = [*(["--debug"] if debug else []), "cache", action, "data", "--key", KEY,
            "--store", remote.url, *options]  # fmt: skip
    started = time.monotonic()
    code = main(argv, env=remote.env)
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    for secret in remote.secrets:
        assert secret not in out + err, out + err
    return Outcome(code, out, err, seconds)


def fault_at(remote: Remote, fault: Fault, request: tuple[str, str]) -> Fault:
    return remote.proxy.add(dataclasses.replace(fault, method=request[0], path=request[1]))


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_a_transient_fault_is_retried_and_the_save_and_restore_succeed(remote, workspace,
                                                                      capsys, fault):  # fmt: skip
    proxy, before = remote.proxy, snapshot(workspace / "data")
    fault_at(remote, TRANSIENT[fault], remote.entry_put)
    saved = run(remote, capsys, "save", "--strict")
    assert (saved.code, saved.warnings) == (0, []), saved.err
    assert proxy.count(*remote.entry_put) == 2  # the faulted one and its retry
    check_retry_after(proxy, fault, remote.entry_put)

    shutil.rmtree(workspace / "data")
    fault_at(remote, TRANSIENT[fault], ("GET", remote.blob_get))
    restored = run(remote, capsys, "restore", "--strict", "--json")
    assert (restored.code, restored.warnings) == (0, []), restored.err
    assert json.loads(restored.out)["cache_hit_kind"] == "exact"
    assert snapshot(workspace / "data") == before
    gets = [s.target for s in proxy.seen if s.method == "GET" and s.target.startswith("/")]
    faulted = [s.target for s in proxy.seen if s.action != "pass" and s.method == "GET"]
    # Fetched again (a bundle's ranges share its URL: counted with the others).
    assert len(faulted) == 1 and gets.count(faulted[0]) >= 2
    check_retry_after(proxy, fault, ("GET", remote.blob_get))


def check_retry_after(proxy: FaultProxy, fault: str, request: tuple[str, str]) -> None:
    """The retry of the faulted request came no sooner than the Retry-After asked."""
    if "retry-after" not in fault:
        return
    probe = Fault(STATUS, *request)
    seen = [s for s in proxy.seen if probe.matches(s.method, s.target)]
    [faulted] = [index for index, s in enumerate(seen) if s.action == STATUS]
    retry = next(s for s in seen[faulted + 1 :] if s.target == seen[faulted].target)
    assert retry.at - seen[faulted].at >= 1.0


@pytest.mark.parametrize("fault", list(PERSISTENT))
def test_a_persistent_fault_warns_and_the_job_goes_on_or_strict_exits_3(remote, workspace,
                                                                       capsys, fault):  # fmt: skip
    proxy = remote.proxy
    baseline = run(remote, capsys, "restore", "--json")  # a clean miss, fault-free
    assert json.loads(baseline.out)["cache_hit_kind"] == "miss"
    template, added = PERSISTENT[fault]
    attempts = remote.policy.attempts
    if remote.waits is not None and fault != "hang":
        added = (attempts - 1) * CAPPED_WAIT  # each wait cut short here, and recorded
    if template.retry_after == TOO_LONG:
        template = dataclasses.replace(template, retry_after=f"{remote.max_retry_after + 1:g}")
    proxy.clear()
    proxy.add(dataclasses.replace(template))
    bound = baseline.seconds + added + SLACK
    for action, consequence in (("save", "not saved"), ("restore", "restored nothing for")):
        lenient = run(remote, capsys, action, "--json")
        assert lenient.code == 0, lenient.err
        [warning] = lenient.warnings
        assert warning.startswith(f"warning: {consequence} {KEY}: "), lenient.err
        assert "Traceback" not in lenient.err and lenient.seconds < bound, lenient
        if action == "restore":
            assert json.loads(lenient.out)["cache_hit_kind"] == "miss"
        strict = run(remote, capsys, action, "--strict")
        assert strict.code == 3 and strict.said[0].startswith(f"{PROGRAM}error: "), strict.err
        assert strict.seconds < bound, strict
        figure(remote.name, fault, action, lenient.seconds - baseline.seconds)
    seen = proxy.count()
    assert 0 < seen <= 4 * attempts, proxy.seen  # four runs, one request each
    if fault == "hang":
        assert seen == 4 * 2  # a request that timed out twice is not tried again
    if remote.waits is not None and fault in ("500", "reset"):
        # The policy's own waits were asked for: GitHub's client's, 3 s growing 1.5x.
        policy = remote.policy
        bases = [policy.first_wait * policy.factor**n for n in range(attempts - 1)]
        assert len(remote.waits) == 4 * len(bases), remote.waits
        for run_waits in zip(*[iter(remote.waits)] * len(bases), strict=True):
            assert all(
                b <= w <= b * (1 + retry.JITTER) for b, w in zip(bases, run_waits, strict=True)
            )


def test_a_save_cut_midway_leaves_the_previous_entry_or_none(remote, workspace, capsys):
    first = snapshot(workspace / "data")
    assert run(remote, capsys, "save", "--strict").code == 0
    (workspace / "data" / "sub" / "c.bin").write_bytes(os.urandom(200_000))
    for fault in (Fault(RESET), Fault(STATUS, status=500), Fault(HANG)):
        remote.proxy.clear()
        fault_at(remote, fault, remote.blob_upload)
        cut = run(remote, capsys, "save")
        assert cut.code == 0 and cut.warnings, cut.err
        assert remote.proxy.count(*remote.blob_upload) > 0  # it did get that far
    # The answer lost after the entry was written: the entry is the new one, whole.
    remote.proxy.clear()
    fault_at(remote, Fault(RESET, when=AFTER), remote.entry_put)
    remote.proxy.add(Fault(STATUS, status=500))  # and nothing else answers
    late = run(remote, capsys, "save")
    assert late.code == 0 and late.warnings, late.err
    remote.proxy.clear()

    shutil.rmtree(workspace / "data")
    restored = run(remote, capsys, "restore", "--strict", "--json")
    assert json.loads(restored.out)["cache_hit_kind"] == "exact", restored.err
    assert snapshot(workspace / "data") == first
    never = run(remote, capsys, "restore", "--strict", "--json", "--key", "never-saved")
    assert never.code == 0 and json.loads(never.out)["cache_hit_kind"] == "miss", never.err


def test_a_store_that_stops_answering_mid_save_costs_one_request_s_retries(
    remote, workspace, capsys, monkeypatch
):
    """Blobs upload side by side; once one has used up its attempts the others are
    not tried, so a save of many packs is not held up pack after pack."""
    monkeypatch.setattr(pack, "PACK_TARGET", 64 * 1024)
    for number in range(24):
        (workspace / "data" / f"{number}.bin").write_bytes(os.urandom(40_000))
    remote.proxy.add(Fault(HANG, *remote.blob_upload))
    outcome = run(remote, capsys, "save")
    assert outcome.code == 0 and len(outcome.warnings) == 1, outcome.err
    hung = remote.proxy.count(*remote.blob_upload)
    # Those in flight when the first gave up, each tried twice: never all 12 packs.
    assert 0 < hung <= 2 * 4, remote.proxy.seen
    assert outcome.seconds < 2 * READ_TIMEOUT + 0.5 + SLACK, outcome
    figure(remote.name, "hang on uploads", "save", outcome.seconds)


def test_a_body_cut_or_slow_is_fetched_whole(remote, workspace, capsys):
    before = snapshot(workspace / "data")
    assert run(remote, capsys, "save", "--strict").code == 0
    shutil.rmtree(workspace / "data")
    remote.proxy.add(Fault(CUT, "GET", remote.blob_get, times=1))
    # 30 pieces a second: slower than a read timeout in all, never silent for one.
    remote.proxy.add(Fault(SLOW, "GET", remote.blob_get, times=1, piece=1024, delay=0.03))
    restored = run(remote, capsys, "restore", "--strict", "--json")
    assert json.loads(restored.out)["cache_hit_kind"] == "exact", restored.err
    assert snapshot(workspace / "data") == before
    assert remote.proxy.count("GET", remote.blob_get, CUT) == 1
    assert remote.proxy.count("GET", remote.blob_get, SLOW) == 1


def test_no_secret_in_the_debug_output_of_failures(remote, workspace, capsys):
    remote.proxy.add(Fault(STATUS, status=500, times=4))
    remote.proxy.add(Fault(RESET))
    for action in ("save", "restore"):
        outcome = run(remote, capsys, action, "--strict", debug=True)
        assert outcome.code == 3 and "Traceback" in outcome.err, outcome.err


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


_FIGURES: list[tuple[str, str, str, float]] = []


def figure(backend: str, fault: str, action: str, added: float) -> None:
    _FIGURES.append((backend, fault, action, added))


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """With -s, the table the module docstring quotes."""
    yield
    if request.config.getoption("capture") == "no":
        for backend, fault, action, added in sorted(_FIGURES):
            print(f"figure: {fault:20} {backend:4} {action:8} +{added:.1f} s")


# A gigabyte each way: one such test at a time (./dev test groups them on one worker),
# so the timing bounds of the others hold on a two-core machine.
@pytest.mark.xdist_group("gigabyte")
def test_one_fault_in_the_middle_of_a_1gb_save_and_restore_loses_nothing(remote, workspace,
                                                                         capsys):  # fmt: skip
    """A reset halfway through a 1 GiB save's uploads, a 503 halfway through its
    restore's downloads: retried, and the save is whole, the restore exact."""
    # The default timeouts: parts of 16 and 32 MiB take more than this file's 1 s.
    remote = dataclasses.replace(remote, env={**remote.env, retry.TIMEOUT_ENV: "60"})
    for number in range(64):
        (workspace / "data" / f"big-{number}.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    before = digests(workspace / "data")
    uploads = remote.blob_upload
    remote.proxy.add(Fault(RESET, *uploads, times=1, skip=_middle(remote)))
    saved = run(remote, capsys, "save", "--strict", "--json")
    assert (saved.code, saved.warnings) == (0, []), saved.err
    assert json.loads(saved.out)["uploaded_bytes"] > 1024**3
    assert remote.proxy.count(*uploads, RESET) == 1

    shutil.rmtree(workspace / "data")
    remote.proxy.clear()
    remote.proxy.add(Fault(STATUS, "GET", remote.blob_get, status=503, times=1, skip=30))
    restored = run(remote, capsys, "restore", "--strict", "--json")
    assert (restored.code, restored.warnings) == (0, []), restored.err
    assert json.loads(restored.out)["cache_hit_kind"] == "exact"
    assert remote.proxy.count("GET", remote.blob_get, STATUS) == 1
    assert digests(workspace / "data") == before


def digests(root: Path) -> dict[str, str]:
    """Each file's sha256 by its path: the contents compared without holding them."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as file:
                found[str(path.relative_to(root))] = hashlib.file_digest(file, "sha256").hexdigest()
    return found


def _middle(remote: Remote) -> int:
    """How many uploads to let through first: about half of a 1 GiB save's (64 packs
    of 16 MiB; the GitHub cache's one bundle goes in 32 blocks of 32 MiB)."""
    return 15 if remote.name == "gha-v2" else 30
