"""A real C code base this project did not write: Brotli's sources, from its source
distribution on PyPI, fetched once per machine into the test cache folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support.base_images import _file_lock, cache_dir

PACKAGE = "Brotli"
VERSION = "1.1.0"
# 33 files of C; every object built through ccache.
MAKEFILE = """\
SRCS := $(wildcard c/common/*.c c/dec/*.c c/enc/*.c)
OBJS := $(SRCS:.c=.o)
all: $(OBJS)
%.o: %.c
\t$(CC) -O1 -Ic/include -c $< -o $@
"""


def brotli_sources() -> Path:
    """A folder holding Brotli's ``c/`` tree and a Makefile for its library."""
    root = cache_dir() / f"{PACKAGE.lower()}-{VERSION}"
    if (root / "Makefile").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(root.parent / f"{root.name}.lock"):
        if (root / "Makefile").exists():
            return root
        download = root.parent / f"{root.name}.download"
        shutil.rmtree(download, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--quiet", "-d", str(download), f"{PACKAGE}=={VERSION}"],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        (sdist,) = download.glob("*.tar.gz")
        staging = root.parent / f"{root.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            archive.extractall(staging, filter="data")
        (top,) = staging.iterdir()
        (top / "Makefile").write_text(MAKEFILE)
        top.rename(root)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(download, ignore_errors=True)
    return root
