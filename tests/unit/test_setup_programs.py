"""scripts/programs.txt and scripts/modules.txt are the single list of the programs and
Python modules podwire runs: scripts/setup.sh installs them and then checks each is
there. These tests read what the code itself runs (subprocess calls and the helpers that
wrap them, statically) and imports, and fail when one is missing from those lists, or
when a benchmark does not check up front for a program it runs.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("agent", "cni", "common", "lab", "bench", "podwire", "policy", "tests")
PACKAGES = {"agent", "cni", "common", "lab", "bench", "policy", "bpf"}
# Calls that start a program named by their first argument (or `args=`).
SPAWNERS = {("subprocess", name) for name in ("run", "Popen", "call", "check_call",
                                               "check_output")}
# Programs that run another program named after their own options; the options of
# theirs the code uses that take a separate value.
PREFIX_RUNNERS = {"nsenter", "unshare", "timeout"}
VALUED_OPTIONS = {"--propagation", "-t", "--target", "-s", "--signal", "-k", "--kill-after"}
SHELLS = {"sh", "bash"}
SHELL_WORDS = {"exec", "cd", "set", "export", "echo", "test", "[", "true", "false", "then",
               "do", "done", "fi", "if", "for", "while", "else"}


def programs_listed() -> dict[str, str]:
    """scripts/programs.txt: program -> the rest of its line (package and note)."""
    listed = {}
    for line in (REPO / "scripts/programs.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            program, _, rest = line.partition(" ")
            listed[program] = rest.strip()
    return listed


# -- reading command lines out of the source -------------------------------------------

Slot = ast.expr  # one element of a command line as the source spells it


@dataclass
class Module:
    path: Path
    tree: ast.Module
    # local name -> file it refers to (module aliases) or (file, name) (imported names)
    modules: dict[str, Path] = field(default_factory=dict)
    names: dict[str, tuple[Path, str]] = field(default_factory=dict)


def _module_file(dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] == "podwire":
        parts = parts[1:] if len(parts) > 1 and parts[1] in PACKAGES else ["podwire", *parts[1:]]
    for candidate in (REPO.joinpath(*parts).with_suffix(".py"),
                      REPO.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    if len(parts) == 1:  # tests import their helpers by bare name (tests/ is on sys.path)
        found = sorted((REPO / "tests").rglob(f"{parts[0]}.py"))
        return found[0] if found else None
    return None


def load_modules() -> dict[Path, Module]:
    modules = {}
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            module = Module(path, ast.parse(path.read_text(), str(path)))
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        target = _module_file(alias.name)
                        if target:
                            module.modules[alias.asname or alias.name] = target
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    for alias in node.names:
                        local = alias.asname or alias.name
                        sub = _module_file(f"{node.module}.{alias.name}")
                        if sub:
                            module.modules[local] = sub
                        elif target := _module_file(node.module):
                            module.names[local] = (target, alias.name)
            modules[path] = module
    return modules


@dataclass(frozen=True)
class Wrapper:
    """A function that runs the program its argument `index` (or its varargs from
    `index` on) names."""
    index: int
    varargs: bool
    method: bool


def _callee(call: ast.Call, module: Module) -> tuple[Path, str] | tuple[str, str] | None:
    func = call.func
    if isinstance(func, ast.Name):
        return module.names.get(func.id, (module.path, func.id))
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = func.value.id
        if owner in ("self", "cls"):
            return (module.path, func.attr)
        if owner in module.modules:
            return (module.modules[owner], func.attr)
        return (owner, func.attr)
    return None


def _target(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and \
            expr.value.id == "self":
        return f"self.{expr.attr}"
    return None


def _assignments(nodes: Iterator[ast.AST]) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in nodes:
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value:
            pairs = [(node.target, node.value)]
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.List | ast.Tuple):
            pairs = [(node.target, value) for value in node.iter.elts]  # for cmd in (...):
        for target, value in pairs:
            if name := _target(target):
                found.setdefault(name, []).append(value)
    return found


def _spellings(expr: ast.expr, assigned: dict[str, list[ast.expr]],
               depth: int = 0) -> Iterator[list[Slot]]:
    """Each way `expr` may spell a command line, as a list of its elements."""
    if depth > 4:
        yield [ast.Starred(expr)]
    elif isinstance(expr, ast.List | ast.Tuple):
        yield from _expanded(list(expr.elts), assigned, depth)
    elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        for left in _spellings(expr.left, assigned, depth + 1):
            for right in _spellings(expr.right, assigned, depth + 1):
                yield left + right
    elif isinstance(expr, ast.IfExp):
        yield from _spellings(expr.body, assigned, depth + 1)
        yield from _spellings(expr.orelse, assigned, depth + 1)
    elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
          and expr.func.id in ("list", "tuple") and len(expr.args) == 1):
        yield [ast.Starred(expr.args[0])]
    elif (name := _target(expr)) and name in assigned:
        for value in assigned[name]:
            yield from _spellings(value, assigned, depth + 1)
    else:
        yield [ast.Starred(expr)]  # unknown: stands for any number of elements


def _expanded(elements: list[Slot], assigned: dict[str, list[ast.expr]],
              depth: int) -> Iterator[list[Slot]]:
    """A list literal with its leading `*NAME` elements spelt out where NAME is known."""
    if elements and isinstance(elements[0], ast.Starred) and \
            (name := _target(elements[0].value)) and name in assigned:
        for head in _spellings(elements[0].value, assigned, depth + 1):
            for tail in _expanded(elements[1:], assigned, depth + 1):
                yield head + tail
    else:
        yield elements


def _text(slot: Slot) -> str | None:
    if isinstance(slot, ast.Constant) and isinstance(slot.value, str):
        return slot.value
    if isinstance(slot, ast.JoinedStr) and slot.values:  # f"--net={path}": an option
        first = slot.values[0]
        if isinstance(first, ast.Constant) and str(first.value).startswith("-"):
            return str(first.value)
    return None


def _program_slots(line: list[Slot], assigned: dict[str, list[ast.expr]]) -> Iterator[Slot]:
    """The elements of a command line that name a program: the first, the one after a
    prefix runner's options (nsenter --net=X prog ...), and those of a `sh -c` script."""
    position = 0
    while position < len(line):
        slot = line[position]
        yield slot
        if _text(slot) in SHELLS and position + 2 < len(line) and _text(line[position + 1]) \
                == "-c":
            script = line[position + 2]
            name = _target(script)
            for text in assigned.get(name, []) if name else [script]:
                yield from _script_programs(text)
        if _text(slot) not in PREFIX_RUNNERS:
            return
        position += 1
        while position < len(line) and (_text(line[position]) or "").startswith("-"):
            position += 2 if _text(line[position]) in VALUED_OPTIONS else 1
        if _text(slot) == "timeout" and position < len(line):
            position += 1  # the duration


def _script_programs(script: Slot) -> Iterator[Slot]:
    """The first word of each command of a shell script written as a literal."""
    if isinstance(script, ast.JoinedStr):
        text = "".join(str(v.value) if isinstance(v, ast.Constant) else '"$x"'
                       for v in script.values)
    elif isinstance(script, ast.Constant) and isinstance(script.value, str):
        text = script.value
    else:
        return
    for command in re.split(r"[;&|\n]+", text):
        words = [w for w in command.split() if w not in SHELL_WORDS]
        if words and re.fullmatch(r"[A-Za-z0-9_.+-]+", words[0]):
            yield ast.Constant(words[0])


def _parameter(slot: Slot, function: ast.FunctionDef) -> tuple[int, bool] | None:
    """Which parameter of `function` the slot stands for: (index, is varargs)."""
    inner = slot.value if isinstance(slot, ast.Starred) else slot
    if not isinstance(inner, ast.Name):
        return None
    params = [a.arg for a in function.args.posonlyargs + function.args.args]
    if params and params[0] in ("self", "cls"):
        params = params[1:]
    if function.args.vararg and inner.id == function.args.vararg.arg:
        return len(params), True
    if inner.id in params:
        return params.index(inner.id), False
    return None


def _functions(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef, bool]]:
    """Every function of a module, and whether it is a method."""
    methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            yield node, id(node) in methods


def _outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield child
            yield from _outside_functions(child)


@dataclass
class Scan:
    modules: dict[Path, Module]
    wrappers: dict[tuple[Path, str], Wrapper] = field(default_factory=dict)
    # program -> where it is run ("bench/flows_bench.py:98")
    programs: dict[str, set[str]] = field(default_factory=dict)

    def _wrapper(self, call: ast.Call, module: Module) -> Wrapper | None:
        callee = _callee(call, module)
        if callee is None:
            return None
        owner, name = callee
        if isinstance(owner, Path):
            return self.wrappers.get((owner, name))
        # obj.method(...) on an object of unknown class: a wrapping method of that name.
        methods = {w for (_, n), w in self.wrappers.items() if n == name and w.method}
        return methods.pop() if len(methods) == 1 else None

    def command_lines(self, call: ast.Call, module: Module,
                      assigned: dict[str, list[ast.expr]]) -> Iterator[list[Slot]]:
        if _callee(call, module) in SPAWNERS:
            argv = call.args[0] if call.args else next(
                (k.value for k in call.keywords if k.arg == "args"), None)
            if argv is not None:
                yield from _spellings(argv, assigned)
        elif wrapper := self._wrapper(call, module):
            if wrapper.varargs:
                yield from _expanded(list(call.args[wrapper.index:]), assigned, 0)
            elif wrapper.index < len(call.args):
                yield from _spellings(call.args[wrapper.index], assigned)

    def visit(self, record: bool) -> bool:
        """One pass over every function: learn wrappers; with `record`, note programs.
        Returns whether a new wrapper was learnt."""
        learnt = False
        for module in self.modules.values():
            module_level = _assignments(_outside_functions(module.tree))
            attributes = {k: v for k, v in _assignments(ast.walk(module.tree)).items()
                          if k.startswith("self.")}
            scopes: list[tuple[ast.FunctionDef | None, bool, dict[str, list[ast.expr]]]] = [
                (None, False, module_level)]
            for function, method in _functions(module.tree):
                scopes.append((function, method, {**module_level, **attributes,
                                                  **_assignments(ast.walk(function))}))
            for function, method, assigned in scopes:
                calls = ast.walk(function) if function else _outside_functions(module.tree)
                for call in calls:
                    if not isinstance(call, ast.Call):
                        continue
                    for line in self.command_lines(call, module, assigned):
                        for slot in _program_slots(line, assigned):
                            param = _parameter(slot, function) if function else None
                            key = (module.path, function.name) if function else None
                            if param and key and key not in self.wrappers:
                                self.wrappers[key] = Wrapper(*param, method)
                                learnt = True
                            name = _text(slot)
                            if record and name and not name.startswith("-"):
                                where = f"{module.path.relative_to(REPO)}:{call.lineno}"
                                self.programs.setdefault(name, set()).add(where)
        return learnt


def scan() -> Scan:
    result = Scan(load_modules())
    while result.visit(record=False):
        pass
    result.visit(record=True)
    return result


SCAN = scan()


def test_the_scan_sees_programs_run_directly_through_nsenter_and_through_wrappers() -> None:
    # Guards the scanner itself: one of each way the code runs a program.
    assert "bench/suite.py" in str(SCAN.programs["dpkg-query"])  # subprocess.run([...])
    assert "bench/flows_bench.py" in str(SCAN.programs["hping3"])  # after nsenter's options
    wrapped = {(path.relative_to(REPO).as_posix(), name) for path, name in SCAN.wrappers}
    assert ("lab/netns.py", "run") in wrapped and ("tests/integration/datapath_topo.py",
                                                  "nsexec") in wrapped


def test_every_program_the_code_runs_is_in_the_setup_list() -> None:
    listed = programs_listed()
    missing = {name: sorted(where) for name, where in SCAN.programs.items()
               if name not in listed}
    assert not missing, f"add these to scripts/programs.txt (run at): {missing}"


def test_every_listed_program_is_run_by_the_code_or_says_who_runs_it() -> None:
    # A program nobody runs any more leaves the list, unless its note says who needs it.
    unused = [name for name, rest in programs_listed().items()
              if name not in SCAN.programs and len(rest.split(None, 1)) < 2]
    assert not unused, f"scripts/programs.txt lists programs nothing runs: {unused}"


def _bench_files(path: Path) -> set[Path]:
    """A benchmark script and the bench/ modules it imports, transitively."""
    files, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in files:
            continue
        files.add(current)
        module = SCAN.modules[current]
        imported = {*module.modules.values(), *(f for f, _ in module.names.values())}
        todo += [f for f in imported if f.parent == REPO / "bench"]
    return files


def test_every_benchmark_checks_up_front_for_the_programs_it_runs() -> None:
    for path in sorted((REPO / "bench").glob("*_bench.py")):
        module = importlib.import_module(f"podwire.bench.{path.stem}")
        files = {f"{f.relative_to(REPO)}:" for f in _bench_files(path)}
        runs = {name for name, where in SCAN.programs.items()
                if any(w.startswith(tuple(files)) for w in where)}
        assert runs <= set(module.TOOLS), (path.name, sorted(runs - set(module.TOOLS)))
        assert "tools.require(TOOLS)" in path.read_text(), path.name


def modules_listed() -> set[str]:
    return {line.split("#", 1)[0].split()[0]
            for line in (REPO / "scripts/modules.txt").read_text().splitlines()
            if line.split("#", 1)[0].strip()}


def test_every_module_the_code_imports_is_in_the_setup_list() -> None:
    own = {path.stem for path in (REPO / "tests").rglob("*.py")} | {"podwire", "__future__"}
    imported: dict[str, set[str]] = {}
    for module in SCAN.modules.values():
        for node in ast.walk(module.tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own:
                    imported.setdefault(top, set()).add(str(module.path.relative_to(REPO)))
    listed = modules_listed()
    assert not {m: sorted(w) for m, w in imported.items() if m not in listed}, \
        "add these to scripts/modules.txt"
    assert listed <= imported.keys(), f"modules.txt lists modules nothing imports: " \
        f"{sorted(listed - imported.keys())}"


def test_nothing_runs_sudo() -> None:
    # The README's commands run as root on a fresh Debian, which has no sudo.
    assert "sudo" not in SCAN.programs
    shells = [*(REPO / "scripts").glob("*.sh"), *(REPO / ".ci").iterdir(),
              *(REPO / "deploy").glob("*.sh"), REPO / "README.md"]
    using = [f"{path.relative_to(REPO)}:{number}" for path in shells
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"(^|[;&|(]|`)\s*sudo\s", line)]
    assert not using, using
