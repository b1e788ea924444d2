"""The test bed itself: the engine runs a base image made here, with no pull."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine


def test_local_base_image_runs_busybox(docker_client, busybox_image):
    output = docker_client.containers.run(
        busybox_image, ["sh", "-c", "echo $((6 * 7))"], remove=True
    )
    assert output.strip() == b"42"
