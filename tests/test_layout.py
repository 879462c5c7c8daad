"""The package's shape: sub-packages in data-flow layers, imports one way, no cycles, one owner of
torch.distributed, no private names across modules, modules of a readable size."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qa_scale"
# Bottom to top: a sub-package may import its own layer and the layers below it, never above.
LAYERS = ["common", "runtime", "synthetic", "data", "evaluation", "modeling", "inference", "training", "ensemble",
          "serving", "workflows", "cli"]
DATA_TABLES = {"synthetic/templates.py"}  # sentence tables: long by nature, not by logic
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """(imported module, line, imported names) of every import in the file, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno, tuple(a.name for a in node.names)))
    return found


def internal_edges() -> dict[str, set[str]]:
    """Module → the qa_scale modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for target, _, names in imports_of(name, path):
            if not target.startswith("qa_scale"):
                continue
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            graph[name].update(hits or ([target] if target in mods else []))
    return graph


def test_no_import_cycle():
    graph = internal_edges()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(modules()):
        if node not in state:
            visit(node)


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_imports_go_down_the_layers():
    wrong = []
    for name, targets in internal_edges().items():
        here = layer(name)
        for target in targets:
            there = layer(target)
            if here is not None and there is not None and there > here:
                wrong.append(f"{name} imports {target} ({LAYERS[there]} is above {LAYERS[here]})")
    assert not wrong, "\n".join(wrong)


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS), subpackages ^ set(LAYERS)


def test_no_private_name_is_taken_from_another_module():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        for target, line, names in imports_of(name, path):
            if target.startswith("qa_scale"):
                wrong += [f"{path.relative_to(PACKAGE)}:{line} imports {n} from {target}"
                          for n in names if n.startswith("_") and n != "__version__"]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.level or (node.module or "").startswith("qa_scale")) for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def uses_torch_distributed(path: Path) -> list[int]:
    """Lines that import or touch torch.distributed (or deepspeed.comm)."""
    banned = ("torch.distributed", "deepspeed.comm")
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.startswith(banned) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith(banned) or (node.module in ("torch", "deepspeed")
                                                   and any(a.name in ("distributed", "comm") for a in node.names))):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr in ("distributed", "comm")
              and isinstance(node.value, ast.Name) and node.value.id in ("torch", "deepspeed")):
            lines.append(node.lineno)
    return lines


def test_only_the_distributed_module_touches_torch_distributed():
    owner = PACKAGE / "runtime" / "distributed.py"
    assert uses_torch_distributed(owner), "the owner itself must be recognised (else this test checks nothing)"
    wrong = {str(p.relative_to(PACKAGE)): lines for p in modules().values()
             if p != owner and (lines := uses_torch_distributed(p))}
    assert not wrong, f"torch.distributed outside runtime/distributed.py: {wrong}"


def test_the_check_catches_a_stray_collective(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text("import torch\n\ndef f(t):\n    torch.distributed.all_reduce(t)\n")
    assert uses_torch_distributed(stray) == [4]
    stray.write_text("from torch import distributed as dist\n")
    assert uses_torch_distributed(stray) == [1]


def test_modules_are_short_except_data_tables():
    long = {str(p.relative_to(PACKAGE)): n for p in modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert set(long) <= DATA_TABLES, long


def test_cli_handlers_are_short():
    """Handlers call the library; a workflow living in a handler would be long."""
    from qa_scale.cli import COMMANDS

    long = {}
    for cmd in COMMANDS.values():
        source = ast.parse(Path(cmd.handler.__code__.co_filename).read_text(encoding="utf-8"))
        fn = next(n for n in ast.walk(source) if isinstance(n, ast.FunctionDef) and n.name == cmd.handler.__name__)
        if fn.end_lineno - fn.lineno > 25:
            long[cmd.name] = fn.end_lineno - fn.lineno
    assert not long, long


def test_tests_mirror_the_package():
    """tests/<sub-package>/ for every layer (tests/bench/ for the benchmark scripts); nothing else."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders == set(LAYERS) | {"bench"}, folders ^ (set(LAYERS) | {"bench"})
    loose = sorted(p.name for p in tests.glob("test_*.py"))
    assert loose == ["test_gpu.py", "test_layout.py", "test_readme.py"], loose  # the whole path / the project


def test_the_files_run_first_exist():
    """conftest's HEAVY_FIRST names test files; a renamed one would silently fall back to the end of the run."""
    from conftest import HEAVY_FIRST

    tests = Path(__file__).resolve().parent
    assert [name for name in HEAVY_FIRST if not (tests / name).is_file()] == []


READER_SIDE = ("inference", "serving", "ensemble")
MAX_PARAMETERS = 6  # more, and a settings object is missing (ReaderOptions, StoreOptions, SearchSettings, …)


def wide_functions(path: Path, limit: int = MAX_PARAMETERS) -> dict[str, int]:
    """Functions of a module taking more than ``limit`` parameters (self/cls not counted)."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            n = len(names) + bool(a.vararg) + bool(a.kwarg)
            if n > limit:
                found[f"{node.name}:{node.lineno}"] = n
    return found


def test_reader_side_functions_take_few_parameters():
    """predict, answer, serve and the ensembler carry settings objects, not a dozen loose values."""
    wide = {f"{p.relative_to(PACKAGE)}:{fn}": n for p in modules().values()
            if p.relative_to(PACKAGE).parts[0] in READER_SIDE for fn, n in wide_functions(p).items()}
    assert not wide, wide


def test_the_parameter_check_catches_a_wide_function(tmp_path):
    wide = tmp_path / "wide.py"
    wide.write_text("class A:\n    def f(self, a, b, c, d, e, *, g=1, **kw):\n        pass\n"
                    "def g(a, b, c, d, e, f):\n    pass\n", encoding="utf-8")
    assert wide_functions(wide) == {"f:2": 7}


# ---------------------------------------------------------------- one way out

OUTPUT_LAYER = {PACKAGE / "common" / "outputs.py", PACKAGE / "common" / "transaction.py"}
PRAGMA = "# output-layer:"  # a write the layer cannot route, with its reason on the same or the line above
WRITERS = {"staged_dir", "atomic_open", "append_open"}  # blocks whose body may write into what they yield
ANY_CALL = {"write_text", "write_bytes", "save_pretrained", "save_to_disk", "savefig", "save_checkpoint", "to_csv",
            "to_parquet", "rmtree", "unlink", "mkdir", "makedirs", "mkdtemp", "mkstemp", "NamedTemporaryFile",
            "copyfile", "copytree", "copy2", "move"}
ON_MODULE = {("os", "replace"), ("os", "rename"), ("os", "remove"), ("shutil", "copy"), ("np", "save"),
             ("np", "savez"), ("np", "savez_compressed"), ("numpy", "save"), ("torch", "save")}


def _writes_a_file(call: ast.Call) -> bool:
    fn = call.func
    if isinstance(fn, ast.Name) and fn.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    if isinstance(fn, ast.Attribute):
        if fn.attr in ANY_CALL:
            return True
        return isinstance(fn.value, ast.Name) and (fn.value.id, fn.attr) in ON_MODULE
    return False


def unrouted_writes(path: Path) -> list[int]:
    """Lines that write a file or folder outside a ``with staged_dir/atomic_open/append_open`` block,
    without a pragma saying why."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
                isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id",
                                                                    getattr(item.context_expr.func, "attr", None))
                in WRITERS for item in node.items):
            inside.update(range(node.body[0].lineno, node.end_lineno + 1))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _writes_a_file(node) and node.lineno not in inside:
            near = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
            if PRAGMA not in near:
                found.append(node.lineno)
    return sorted(set(found))


def test_every_write_goes_through_the_output_layer():
    wrong = {str(p.relative_to(PACKAGE)): lines for p in modules().values()
             if p not in OUTPUT_LAYER and (lines := unrouted_writes(p))}
    assert not wrong, f"writes that bypass common/outputs.py (route them, or say why with {PRAGMA!r}): {wrong}"


def test_the_write_check_catches_a_stray_write(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text('def f(p, d, np):\n    open(p, "w").write("x")\n    d.mkdir()\n    np.save(p, 1)\n'
                     '    with open(p) as fh:\n        fh.read()\n'
                     '    with staged_dir(p, kind="x") as tmp:\n        np.save(tmp / "a.npy", 1)\n'
                     '    d.unlink()  # output-layer: a reason\n')
    assert unrouted_writes(stray) == [2, 3, 4]
