#!/usr/bin/env bash
# mypy over the installed package as Python sees it. pyproject.toml maps the design
# card's top-level folders (agent/, cni/, ...) to podwire.agent, podwire.cni, ...;
# mypy cannot read that mapping, so it checks a tree of links laid out as the package,
# where every `from podwire.x import y` resolves and is checked across modules.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
view=$(mktemp -d)
trap 'rm -rf "$view"' EXIT
mkdir "$view/podwire"
for part in agent cni policy lab bench bpf common; do
  ln -s "$root/$part" "$view/podwire/$part"
done
for entry in podwire/*; do
  ln -s "$root/$entry" "$view/podwire/$(basename "$entry")"
done
cd "$view"
MYPYPATH="$view" "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" \
  --cache-dir "$root/.mypy_cache" -p podwire
