"""The plugin executable as a container runtime finds it: `<bin dir>/<type>`.

A runtime starts it once per pod operation, and its start is most of an ADD's CPU, so it
is two things, both written here (by the DaemonSet's install on hosts, by the lab, by
scripts/setup.sh for the tests):

- `<plugin>`: a launcher of a few lines with a real `#!/usr/bin/python3 -IS` shebang:
  no `/bin/sh` in front (installers drop interpreter flags from `#!python`, which is why
  a script entry point cannot carry them), no site, nothing from the environment;
- `<plugin>.d/`: cni/shim.py as the module `podwire_cni_shim` with its bytecode, which
  the launcher imports. A script run as `__main__` is compiled at every start and never
  cached; imported, the shim is read from `__pycache__` (written here for this
  interpreter's version; a host interpreter of another version compiles it once and
  caches its own).

The launcher finds the module beside itself through `__file__`, so a runtime must run the
file, not a symlink to it (a link elsewhere would look for the module there).
"""

from __future__ import annotations

import argparse
import py_compile
import shutil
from importlib.util import cache_from_source
from pathlib import Path

from podwire.cni import shim
from podwire.common.files import write_atomically

# Where hosts (and Debian, where podwire runs) keep the interpreter the shim needs: the
# standard library alone, Python 3.10 or later.
INTERPRETER = "/usr/bin/python3"
MODULE = "podwire_cni_shim"


def module_dir(plugin: Path) -> Path:
    """Where the launcher at `plugin` imports the shim from."""
    return plugin.with_name(plugin.name + ".d")


def launcher(interpreter: str = INTERPRETER) -> bytes:
    """The executable's text: -I (isolated: no environment, no user site, no script
    directory on the path) and -S (no site module), then the shim from `<plugin>.d`."""
    return (f"#!{interpreter} -IS\n"
            f'"""podwire-cni, written by podwire.cni.executable: runs {MODULE} from\n'
            f'the directory beside this file, named after it with ".d"."""\n'
            "import sys\n\n"
            'sys.path.insert(0, __file__ + ".d")\n'
            f"from {MODULE} import main\n\n"
            "main()\n").encode()


def install(plugin: Path, interpreter: str = INTERPRETER) -> None:
    """Write the executable at `plugin`: the module and its bytecode first, then the
    launcher, so a runtime never starts a launcher without its module."""
    source = module_dir(plugin) / f"{MODULE}.py"
    write_atomically(source, Path(shim.__file__).read_bytes(), 0o644)
    # py_compile writes the bytecode under a temporary name and renames it.
    py_compile.compile(str(source), cfile=cache_from_source(str(source)), doraise=True)
    write_atomically(plugin, launcher(interpreter), 0o755)


def uninstall(plugin: Path) -> None:
    """Remove the launcher, then its module (the reverse of install); absent is done."""
    plugin.unlink(missing_ok=True)
    try:
        shutil.rmtree(module_dir(plugin))
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m podwire.cni.executable",
        description="Write podwire's CNI plugin executable (a launcher and its module).")
    parser.add_argument("plugin", type=Path, help="the executable's path, e.g. "
                        "/opt/cni/bin/podwire")
    parser.add_argument("--interpreter", default=INTERPRETER)
    args = parser.parse_args(argv)
    install(args.plugin, args.interpreter)


if __name__ == "__main__":
    main()
