"""The plugin executable as written into a CNI bin dir: a launcher with a real
`#!/usr/bin/python3 -IS` shebang that runs the shim from its cached bytecode, importing
nothing beyond a few stdlib modules."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from podwire.cni import executable

INTERPRETER = Path(executable.INTERPRETER)
# Modules whose import would mean the shim pays for more than it needs at every start.
HEAVY = ("site", "os", "json", "socket", "re", "enum", "collections", "importlib.util")

pytestmark = pytest.mark.skipif(not INTERPRETER.exists(), reason="no /usr/bin/python3")


def run_plugin(plugin: Path, command: str, stdin: str,
               *flags: str) -> subprocess.CompletedProcess[str]:
    """Run the launcher as a runtime does (its own shebang), or with the shebang's
    interpreter and flags plus `flags` (to watch its imports)."""
    argv = [str(plugin)] if not flags else [str(INTERPRETER), "-IS", *flags, str(plugin)]
    return subprocess.run(argv, input=stdin, env={"CNI_COMMAND": command, "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_launcher_has_a_real_shebang_and_answers_version(tmp_path: Path) -> None:
    plugin = tmp_path / "bin/podwire"
    executable.install(plugin)
    assert plugin.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    done = run_plugin(plugin, "VERSION", '{"cniVersion": "1.0.0"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["supportedVersions"][-1] == "1.1.0"


def test_the_shim_runs_from_the_bytecode_the_install_wrote(tmp_path: Path) -> None:
    plugin = tmp_path / "podwire"
    executable.install(plugin)
    source = executable.module_dir(plugin) / f"{executable.MODULE}.py"
    cached = next((executable.module_dir(plugin) / "__pycache__").glob("*.pyc"))
    written = cached.read_bytes()
    done = run_plugin(plugin, "VERSION", "{}", "-v")
    assert done.returncode == 0, done.stderr
    # Loaded from the cache the install wrote, not compiled from the source at start.
    assert f"# code object from '{cached}'" in done.stderr
    assert f"# code object from '{source}'" not in done.stderr
    assert cached.read_bytes() == written


@pytest.mark.parametrize(("command", "code"), [("VERSION", 0), ("ADD", 11)])
def test_the_shim_imports_only_what_it_needs(tmp_path: Path, command: str, code: int) -> None:
    """VERSION, and an ADD towards an agent that is not there (the socket path and the
    error object: the whole forwarding path but the answer)."""
    plugin = tmp_path / "podwire"
    executable.install(plugin)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "podwire",
                       "agentSocket": str(tmp_path / "absent.sock")})
    done = run_plugin(plugin, command, conf, "-v")
    assert done.returncode == code, done.stdout + done.stderr
    imported = set(re.findall(r"^import '([\w.]+)'", done.stderr, re.MULTILINE))
    assert executable.MODULE in imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_install_replaces_and_uninstall_removes_both_parts(tmp_path: Path) -> None:
    plugin = tmp_path / "podwire"
    executable.install(plugin, interpreter="/opt/py/bin/python3")
    executable.install(plugin)  # an upgrade over the first install
    assert plugin.read_bytes() == executable.launcher()
    assert plugin.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["podwire", "podwire.d"]
    executable.uninstall(plugin)
    assert list(tmp_path.iterdir()) == []
    executable.uninstall(plugin)  # again: nothing to do, no error
