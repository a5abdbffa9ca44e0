"""The image's kernel-header fallback, for real: a node with no headers for its kernel.

The image merges Debian's header trees with deploy/merge-kernel-headers.sh; the
entrypoint points BCC_KERNEL_SOURCE at the result when /lib/modules/<release>/build is
missing. Here the same script merges this machine's Debian headers, and a private mount
namespace hides /lib/modules/<release> (the host's headers), as on a node without them.
The datapath loader then compiles and pins the real datapath only through the fallback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv/bin/python")

# Run inside the mount namespace: decide like the entrypoint, then load the datapath.
LOAD = """
import json, os, sys
from pathlib import Path
from podwire.agent.install import InstallError, kernel_headers_env
from podwire.agent.loader import DatapathSizes, LoaderError, run_loader
try:
    env = kernel_headers_env(os.uname().release, fallback=Path(sys.argv[1]))
except InstallError as err:
    print(json.dumps({"error": str(err)}))
    sys.exit(0)
os.environ.update(env)
try:
    summary = run_loader(Path(sys.argv[2]), DatapathSizes(endpoints=16, ipcache=64, policy=64,
                                                          conntrack=64))
except LoaderError as err:
    print(json.dumps({"env": env, "loader_error": str(err)[-300:]}))
    sys.exit(0)
print(json.dumps({"env": env, "pinned": sorted(os.listdir(sys.argv[2]))}))
"""


@pytest.fixture
def scratch() -> Iterator[tuple[Path, Path]]:
    prefix = f"pwt8h{secrets.token_hex(3)}"
    work, pin_dir = Path(f"/tmp/{prefix}"), Path(f"/sys/fs/bpf/{prefix}")
    work.mkdir()
    try:
        yield work, pin_dir
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def without_host_headers(work: Path, fallback: Path, pin_dir: Path) -> str:
    """Run LOAD where /lib/modules/<release> is an empty directory (this process only)."""
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    modules = Path("/lib/modules") / os.uname().release
    script = work / "load.py"
    script.write_text(LOAD)
    shell = (f'mount --bind "{empty}" "{modules}" && '
             f'exec "{PYTHON}" "{script}" "{fallback}" "{pin_dir}"')
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             shell], capture_output=True, text=True, check=False, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_image_headers_compile_the_datapath_where_the_node_has_none(
        scratch: tuple[Path, Path]) -> None:
    work, pin_dir = scratch
    merged = work / "kernel-headers"
    subprocess.run(["sh", str(REPO / "deploy/merge-kernel-headers.sh"), str(merged)],
                   check=True, capture_output=True, timeout=120)
    assert (merged / "include" / "generated").is_dir()

    # Without the fallback there is nothing to compile against: the entrypoint says so.
    missing = json.loads(without_host_headers(work, work / "absent", pin_dir))
    assert "no kernel headers for kernel" in missing["error"]

    loaded = json.loads(without_host_headers(work, merged, pin_dir))
    assert loaded.get("env") == {"BCC_KERNEL_SOURCE": str(merged)}
    assert "loader_error" not in loaded, loaded
    assert {"prog_from_pod", "prog_to_pod", "prog_from_overlay"} <= set(loaded["pinned"])


def test_merge_script_names_what_is_missing(scratch: tuple[Path, Path]) -> None:
    work, _ = scratch
    result = subprocess.run(["sh", str(REPO / "deploy/merge-kernel-headers.sh"),
                             str(work / "out"), str(work)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 1
    assert f"no linux-headers-*-amd64 under {work}" in result.stderr
