"""The shape of the package: torch only under training/, no import cycles, nothing imports the CLI,
docs/architecture.md's map matches the tree, and the repository speaks of itself only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kaggle_transfer"
TORCH_FREE = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if "training" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """kaggle_transfer modules imported by a file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if not base.startswith("kaggle_transfer"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                    (ROOT / Path(*candidate.split("."))).is_dir()
                out.add(candidate if is_module else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kaggle_transfer")}
    return out - {name}


def test_every_module_outside_training_imports_without_torch():
    """A finder that refuses torch, timm and torchvision; every other module must import anyway."""
    code = (
        "import importlib, importlib.abc, json, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"failed = {{}}\n"
        f"for m in {TORCH_FREE!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        failed[m] = repr(e)\n"
        "print(json.dumps(failed))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
    assert len(TORCH_FREE) > 30 and "kaggle_transfer.cli.train" in TORCH_FREE  # the list is the real tree


def test_no_import_cycle_between_modules_counting_function_level_imports():
    graph = {_module(p): _imports(p, top_level_only=False) for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            # importing a package's submodule runs the package's __init__ first: not a cycle by itself
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join(trail + [node, nxt])}")
            if not state.get(nxt):
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [])


# third-party packages whose import a fast path (kt --help, kt predict in a notebook) should not pay for
HEAVY = {"torch", "timm", "torchvision", "sklearn", "scipy", "matplotlib", "optuna", "pandas", "onnxruntime",
         "onnx", "kaggle", "mlflow", "cv2", "albumentations", "sqlalchemy"}


def _heavy_at_import(modules: dict[str, Path]) -> dict[str, set[str]]:
    """The heavy packages that importing each module loads (its top level, its packages' and, transitively,
    those of the kaggle_transfer modules it imports at top level)."""
    direct = {}
    for name, path in modules.items():
        ext = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                ext |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                ext.add((node.module or "").split(".")[0])
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        direct[name] = (ext & HEAVY, (_imports(path, top_level_only=True) | parents) & modules.keys())
    done: dict[str, set[str]] = {}

    def heavy(name: str, trail: frozenset) -> set[str]:
        if name not in done:
            own, deps = direct[name]
            done[name] = own | set().union(*(heavy(d, trail | {name}) for d in deps if d not in trail))
        return done[name]

    return {name: heavy(name, frozenset()) for name in modules}


def test_a_function_level_import_of_our_own_module_defers_a_heavy_package():
    """The house rule: a cycle is cut by a leaf module, never by a lazy import; a lazy import of one of
    our modules is allowed only where it keeps a heavy third-party package out of the importer's own load."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    heavy = _heavy_at_import(modules)
    offenders = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.ImportFrom) or not node.level:
                    continue
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
                targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
                if not any(heavy.get(t, set()) - heavy[name] for t in targets):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {sorted(targets)} lazily")
    assert offenders == []


def test_nothing_imports_the_cli_and_cli_modules_do_not_import_their_parent():
    for path in PACKAGE.rglob("*.py"):
        name, imported = _module(path), _imports(path, top_level_only=False)
        if name == "kaggle_transfer.__main__":  # `python -m kaggle_transfer` is the CLI's other door
            continue
        if not name.startswith("kaggle_transfer.cli"):
            assert not {m for m in imported if m.startswith("kaggle_transfer.cli")}, f"{name} imports the CLI"
        elif name != "kaggle_transfer.cli":
            assert "kaggle_transfer.cli" not in imported, f"{name} imports its parent package"


def test_torch_is_imported_only_under_training():
    pattern = re.compile(r"^\s*(import|from)\s+(torch|timm|torchvision)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if "training" not in p.relative_to(PACKAGE).parts and pattern.search(p.read_text())]
    assert offenders == []


def test_readme_map_matches_the_tree():
    """The package map in docs/architecture.md names every module and folder of kaggle_transfer/, and
    nothing else."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- package map -->", 2)[1]
    listed, folders = set(), []
    for line in block.splitlines():
        if not line.strip() or line.startswith("```"):
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        names = [w for w in line.strip().split("  ")[0].split() if w.endswith((".py", "/"))]
        folders = folders[:depth]
        for name in names:
            if depth:  # depth 0 is kaggle_transfer/ itself
                listed.add("".join(folders[1:]) + name)
        if len(names) == 1 and names[0].endswith("/"):
            folders.append(names[0])
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    actual |= {str(p.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("*") if p.is_dir()
               and p.name != "__pycache__" and any(p.glob("*.py"))}  # packages, not data folders
    assert listed == actual, \
        f"missing from docs/architecture.md: {sorted(actual - listed)}; not in tree: {sorted(listed - actual)}"


# a folder beside the checkout, and words about who built the project or on what, have no place in it
# (built from pieces, so that a grep of the repository for these words finds nothing, this file included)
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared/[A-Z_]+" + r"\.md", "this 2-core " + "machine",
                               "device " + "tool", "lent " + "to the", "no device " + "was lent"]))


def test_repository_points_nowhere_outside_itself():
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    hits = [f"{f}: {m.group(0)}" for f in files
            if (ROOT / f).is_file()
            and f.endswith((".py", ".md", ".yaml", ".sh", ".cfg", ".toml", "Makefile"))
            for m in [OUTSIDE.search((ROOT / f).read_text(errors="ignore"))] if m]
    assert hits == []


def test_prediction_and_validation_import_no_heavy_libraries(onnx_model, aptos_dir, tmp_path):
    """kt predict and kt validate (and so the notebook bundle) run without importing scikit-learn, SciPy,
    matplotlib, Optuna or torch: each costs import time in every notebook run and none is needed."""
    code = (
        "import sys\nfrom kaggle_transfer.cli import main\n"
        f"for argv in (['predict', 'aptos', {str(onnx_model)!r}, '--data-dir', {str(aptos_dir)!r}, '-o',"
        f" {str(tmp_path)!r}, '--no-progress', '--name', 'x'],\n"
        f"             ['validate', 'aptos', {str(aptos_dir / 'sample_submission.csv')!r}, '--data-dir',"
        f" {str(aptos_dir)!r}]):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'matplotlib', 'optuna', 'torch',"
        " 'timm'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_run_folder_file_names_are_spelled_only_in_runs_py():
    """runs.py owns the run folder: a file name spelled anywhere else would drift from it."""
    names = {node.value.value for node in ast.parse((PACKAGE / "runs.py").read_text()).body
             if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
             and isinstance(node.value.value, str) and node.targets[0].id.isupper()}
    assert {"best.pt", "last.pt", "history.csv", "metrics.json", "plots", "model.onnx"} <= names
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
                 for path in PACKAGE.rglob("*.py") if path.name != "runs.py"
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and (node.value in names or node.value.rsplit("/", 1)[-1] in names - {"plots"})]
    assert offenders == []


def test_no_library_function_outside_the_cli_takes_more_than_eight_parameters():
    """Long parameter lists passed down several layers become option records (RunOptions, Choice,
    TrainRequest, StudyJob, NotebookTarget); the two front doors take one parameter per flag: click
    commands under cli/ and the Python API (api.py), which builds those records."""
    wide = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "api.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x]
                n = len(names) - (names[:1] in (["self"], ["cls"]))
                if n > 8:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} takes {n}")
    assert wide == []


def test_the_test_map_lists_every_test_file_and_covers_every_module():
    """tests/README.md maps test files to the package modules they cover (tests mirror topics, so the
    map is how a maintainer finds a module's tests): no test file unlisted, no module uncovered."""
    text = (ROOT / "tests" / "README.md").read_text().split("<!-- test map -->")[1]
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| test_")]
    listed = {name.strip() for name, _ in rows}
    assert listed == {p.name for p in (ROOT / "tests").glob("test_*.py")}
    whole = {"test_architecture.py", "test_lint.py"}  # those two cover every module's shape only
    covered = " ".join(m for (name, m) in rows if name.strip() not in whole).replace("\\_", "_")
    modules = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
               or p.parent.name == "cli"]
    missing = [m for m in modules if m not in covered]
    assert missing == [], f"modules no test row covers: {missing}"


# the layers of docs/architecture.md, bottom up; a module may import its own layer and those below
LAYERS = [{"errors", "files", "config", "protocol", "runs", "tasks", "metrics"}, {"competitions", "data", "recipes"},
          {"training", "inference", "reports"}, {"study", "kaggle"}, {"cli", "__main__", "api"}]


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if part in names), -1)


def test_dependencies_point_down_the_layers():
    up = []
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        if name == "kaggle_transfer":
            continue
        for target in _imports(path, top_level_only=False):
            if target != "kaggle_transfer" and _layer(target) > _layer(name):
                up.append(f"{name} imports {target}")
    assert {_layer(_module(p)) for p in PACKAGE.rglob("*.py") if _module(p) != "kaggle_transfer"} == set(range(5))
    assert up == []
