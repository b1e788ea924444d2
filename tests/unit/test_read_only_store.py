"""A cache folder mounted read-only, as self-hosted runners share one with untrusted
jobs: a restore reads it, a save says why it cannot write, and nothing is left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ci_integration.cli import main


@pytest.fixture
def read_only_mount(tmp_path):
    """(the store's folder, the same folder mounted read-only)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source, mounted = tmp_path / "store", tmp_path / "mounted"
    source.mkdir()
    mounted.mkdir()
    yield source, mounted
    subprocess.run(["umount", str(mounted)], check=False, capture_output=True)


def mount_read_only(source: Path, mounted: Path) -> None:
    subprocess.run(["mount", "--bind", str(source), str(mounted)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)], check=True)


def test_a_read_only_store_is_restored_from_and_refuses_saves_in_one_line(
    read_only_mount, tmp_path, monkeypatch, base_env, capsys
):
    source, mounted = read_only_mount
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deps" / "sub").mkdir(parents=True)
    (tmp_path / "deps" / "sub" / "lib.txt").write_text("library\n")
    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main"}
    assert main(["cache", "save", "--key", "deps", "deps"],
                env={**env, "CI_INTEGRATION_CACHE_DIR": str(source)}) == 0  # fmt: skip
    mount_read_only(source, mounted)
    with pytest.raises(OSError):
        (mounted / "probe").write_text("")
    before = sorted(path.relative_to(source) for path in source.rglob("*"))

    (tmp_path / "deps" / "sub" / "lib.txt").unlink()
    readonly = {**env, "CI_INTEGRATION_CACHE_DIR": str(mounted)}
    capsys.readouterr()
    assert main(["cache", "restore", "--key", "deps", "--strict", "deps"], env=readonly) == 0
    assert (tmp_path / "deps" / "sub" / "lib.txt").read_text() == "library\n"
    assert "error" not in capsys.readouterr().err

    (tmp_path / "deps" / "new.txt").write_text("new\n")
    assert main(["cache", "save", "--key", "deps-2", "deps"], env=readonly) == 0
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert "warning: not saved deps-2: Read-only file system" in warning
    assert main(["cache", "save", "--key", "deps-2", "--strict", "deps"], env=readonly) == 3
    assert sorted(path.relative_to(source) for path in source.rglob("*")) == before
