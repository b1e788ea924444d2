"""A Docker engine of a test's own, which the test may stop, crash and start again.

A second dockerd with its own data and exec roots and socket, inside a network
namespace of its own: a dockerd sets up and tears down its bridge interface, and in
the host's namespace it would take the host engine's docker0 with it. Its containers
have a loopback interface and nothing else, which a test of engine faults does not
miss.

containerd runs on its own beside it, as systemd runs the two on a real host: a
dockerd killed outright leaves containerd and the containers running, and the next
dockerd takes them over. (A containerd that dockerd started itself survives dockerd's
SIGKILL as well, but no later dockerd can reach it.) Root only, like dockerd.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker

START_SECONDS = 30
STOP_SECONDS = 30

CONTAINERD_CONFIG = """\
version = 2
root = "{root}/containerd-root"
state = "{root}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
"""


# Newer engines than this machine's come from Debian's packages, unpacked by
# ./dev engines (engines_setup) into this folder, one sub-folder a Debian suite.
ENGINES_DIR_ENV = "CI_INTEGRATION_TEST_CACHE"
DEFAULT_CACHE_DIR = "/var/cache/ci-integration-test"


@dataclasses.dataclass(frozen=True)
class EngineKind:
    """A Docker engine as users run it: its version (from the Debian suite that packages
    it, or this machine's own) and its image store."""

    name: str
    suite: str | None = None  # None: the dockerd, containerd and client on this machine
    containerd_store: bool = False

    @property
    def folder(self) -> Path | None:
        if self.suite is None:
            return None
        cache = os.environ.get(ENGINES_DIR_ENV) or DEFAULT_CACHE_DIR
        return Path(cache) / "engines" / self.suite

    @property
    def bin_dir(self) -> Path | None:
        """What goes first on dockerd's and containerd's PATH (None: the system's)."""
        return None if self.folder is None else self.folder / "bin"

    @property
    def client(self) -> str:
        """The docker client of the same version; bookworm's has BuildKit built in."""
        return "/usr/bin/docker" if self.bin_dir is None else str(self.bin_dir / "docker")

    @property
    def buildx_plugin(self) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / "docker-config" / "cli-plugins" / "docker-buildx"

    def missing(self) -> str | None:
        """Why this kind cannot run here, or None."""
        if self.bin_dir is not None and not (self.folder / "ready").is_file():
            return f"no Docker from Debian {self.suite} in {self.folder}: run ./dev engines"
        return None

    def daemon_config(self) -> dict:
        return {"features": {"containerd-snapshotter": True}} if self.containerd_store else {}


HOST_KIND = EngineKind("20.10")


class PrivateEngine:
    def __init__(
        self, root: Path, *, live_restore: bool = False, kind: EngineKind = HOST_KIND
    ) -> None:
        self.root = root
        self.kind = kind
        # --live-restore: running containers outlive a dockerd restart (else the next
        # dockerd kills them, and removes those started with --rm).
        self.live_restore = live_restore
        self.socket = root / "docker.sock"
        self.containerd_socket = root / "containerd.sock"
        self.netns = f"ci-integration-test-{os.getpid()}-{id(self) % 100000}"
        self.process: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        # The client's own folder: buildx keeps its state there, one engine's apart.
        self.docker_config = root / "docker-config"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """What a job needs to reach this engine with its client (and buildx)."""
        return {"DOCKER_HOST": self.docker_host, "DOCKER_CONFIG": str(self.docker_config)}

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=120)

    def start(self) -> None:
        """Start dockerd (again: the same roots, so images and containers survive)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        if self.containerd is None:
            self._start_containerd()
        daemon_json = self.root / "daemon.json"
        daemon_json.write_text(json.dumps(self.kind.daemon_config()))
        command = [
            *self.in_netns, "dockerd", "--config-file", str(daemon_json),
            "--containerd", str(self.containerd_socket),
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"), "--host", self.docker_host,
            "--iptables=false", "--ip6tables=false", "--shutdown-timeout", "2",
            *(["--live-restore"] if self.live_restore else []),
        ]  # fmt: skip
        self.process = self._spawn(command, "dockerd.log")
        self._wait_until(self.answers, "dockerd", self.log_tail)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop dockerd as an operator does (TERM: it stops its containers, 2 s each by
        --shutdown-timeout) or as a crash does (KILL: they run on under containerd)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with contextlib.closing(docker.APIClient(base_url=self.docker_host, timeout=2)) as api:
                return bool(api.ping())
        except Exception:
            return False

    def log_tail(self, lines: int = 20, name: str = "dockerd.log") -> str:
        text = (self.root / name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def shut_down(self) -> None:
        """Everything goes: containers, dockerd, containerd and the shims, the netns."""
        if self.process is not None:
            if not self.answers():
                self.start()
            with contextlib.closing(self.client()) as client:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            self.stop(signal.SIGTERM)
        if self.containerd is not None:
            self.containerd.terminate()
            try:
                self.containerd.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
        _kill_processes_under(self.root)
        # Overlay mounts and container state under the roots belong to the engine.
        subprocess.run(["umount", "-R", "-l", str(self.root / "data")], capture_output=True,
                       check=False)  # fmt: skip
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)

    def _setup_client(self) -> None:
        self.docker_config.mkdir(parents=True, exist_ok=True)
        plugin = self.kind.buildx_plugin
        if plugin is not None:
            plugins = self.docker_config / "cli-plugins"
            plugins.mkdir(exist_ok=True)
            (plugins / plugin.name).unlink(missing_ok=True)
            (plugins / plugin.name).symlink_to(plugin)

    def _start_containerd(self) -> None:
        self._setup_client()
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True,
                       capture_output=True)  # fmt: skip
        config = self.root / "containerd.toml"
        config.write_text(CONTAINERD_CONFIG.format(root=self.root))
        command = [*self.in_netns, "containerd", "--config", str(config)]
        self.containerd = self._spawn(command, "containerd.log")
        self._wait_until(self.containerd_socket.exists, "containerd",
                         lambda: self.log_tail(name="containerd.log"))  # fmt: skip

    @property
    def in_netns(self) -> list[str]:
        """The prefix that runs a command in the engine's network namespace, where its
        127.0.0.1 is the engine's (a registry there is one the engine can pull from)."""
        # nsenter, not `ip netns exec`: that one mounts a /sys of its own, without the
        # cgroup hierarchy dockerd needs.
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        if self.kind.bin_dir is not None:
            # dockerd finds containerd's shim, runc, docker-init and docker-proxy here.
            env["PATH"] = f"{self.kind.bin_dir}{os.pathsep}{env.get('PATH', '')}"
            command = [part if part not in ("dockerd", "containerd") else
                       str(self.kind.bin_dir / part) for part in command]  # fmt: skip
        with (self.root / log_name).open("ab") as log:
            # A session of its own: Ctrl-C in the test's terminal is not for it.
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip

    def _wait_until(self, ready, what: str, log_tail) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private {what} did not start: {log_tail()}")
            time.sleep(0.1)


def _kill_processes_under(root: Path) -> None:
    """What a crashed engine leaves running: shims, whose command line names the
    engine's roots, and build steps and containers: processes in a mount namespace of
    their own whose root is an overlay made of the engine's folders. (Every process
    of the host's namespace sees those overlays too, but not as its root.)"""
    marker = str(root)
    ours = os.stat("/proc/self/ns/mnt").st_ino
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            if marker in command or (
                os.stat(entry / "ns" / "mnt").st_ino != ours and marker in _root_mount(entry)
            ):
                os.kill(int(entry.name), signal.SIGKILL)


def _root_mount(process: Path) -> str:
    """The mountinfo line of the process's ``/``."""
    for line in (process / "mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            return line
    return ""


def available() -> str | None:
    """Why no private engine can run here, or None."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for tool in ("dockerd", "containerd", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    return None


@contextlib.contextmanager
def running(
    root: Path, *, live_restore: bool = False, kind: EngineKind = HOST_KIND
) -> Iterator[PrivateEngine]:
    engine = PrivateEngine(root, live_restore=live_restore, kind=kind)
    try:
        engine.start()
        yield engine
    finally:
        engine.shut_down()
        shutil.rmtree(root, ignore_errors=True)
