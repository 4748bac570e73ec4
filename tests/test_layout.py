"""How the package is laid out (issue 15): no machine paths, imports that flow one way
(runtime ← lab) without cycles, a runtime that needs only its base dependencies."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "langchain_trim"

_ABSOLUTE = re.compile(
    r"""(?<![\w.:/~-])/(?:work|home|Users|root|mnt|srv|opt|scratch|data|shared|nfs|var|tmp)/"""
    r"""|[A-Za-z]:\\\\[A-Za-z]"""
)
"""An absolute path of some machine (``/work/...``, ``/home/...``, ``C:\\Users``)."""


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".py", ".json"))


def test_the_package_names_no_machine_path() -> None:
    """Data comes by argument or environment variable (``langchain_trim.paths``), never
    from where a developer's data lay (``/work/shared/data``, ``<repo>/../shared/data``)."""
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if "shared/data" in line or _ABSOLUTE.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
            if re.search(r"""["']shared["']\s*/\s*["']data["']""", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
            # Path(__file__).parents[k] at or above the repository root leaves the package
            for k in re.findall(r"parents\[(\d+)\]", line):
                if int(k) >= len(rel.parts) - 1:
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_official_tables_come_only_from_the_environment_or_a_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from langchain_trim.errors import DataNotFoundError, InvalidInputError
    from langchain_trim.paths import reference_dir
    from langchain_trim.policies.calibration import official_calibration
    from langchain_trim.policies.registry import make_policy

    monkeypatch.delenv("TRIM_REFERENCE", raising=False)
    monkeypatch.delenv("TRIM_SHARED_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="set TRIM_REFERENCE") as info:
        official_calibration()
    assert "\n" not in str(info.value) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(InvalidInputError, match=r"pomdp needs the official reference tables"):
        make_policy("pomdp")
    monkeypatch.setenv("TRIM_SHARED_DATA", str(tmp_path))
    assert reference_dir() == tmp_path / "trim_reference"
    with pytest.raises(DataNotFoundError, match=r"trim_reference/pomdp_calibration.json does not"):
        official_calibration()
    monkeypatch.setenv("TRIM_REFERENCE", str(tmp_path / "ref"))
    assert reference_dir() == tmp_path / "ref"


# -- the import graph ---------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, lazy)`` for every ``langchain_trim`` import that runs (``TYPE_CHECKING``
    blocks do not); ``lazy``: inside a function."""
    import ast

    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, lazy))
                # ``from package import submodule``
                found.extend((f"{child.module}.{a.name}", lazy) for a in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(m, lazy) for m, lazy in found if m.split(".")[0] == "langchain_trim"]


def _graph() -> dict[str, dict[str, bool]]:
    """``module -> {imported module: only lazily}``.  Importing ``a.b.c`` runs ``a.b``'s
    ``__init__`` too, unless the importer already lives in ``a.b`` (or it is the root
    package, whose ``__init__`` is the public facade over everything)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        edges: dict[str, bool] = {}
        for target, lazy in _imports(path):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep not in modules or dep == name:
                    continue
                is_package_of_importer = i < len(parts) and (name + ".").startswith(dep + ".")
                if not is_package_of_importer:
                    edges[dep] = edges.get(dep, True) and lazy
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_import_graph_has_no_cycle() -> None:
    """Lazy imports count: a cycle through a function-level import is still a design cycle
    (``policies`` and ``sim`` used to import each other that way)."""
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": False}, "b": {"c": True}, "c": {"a": True}, "d": {"a": False}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_runtime_never_imports_the_lab() -> None:
    """Imports flow one way: the lab uses the runtime, never the reverse.  The CLI is the
    one door: its ``train`` command loads the lab when it runs."""
    graph = _graph()
    offenders = []
    for name, edges in graph.items():
        if name == "langchain_trim.lab" or name.startswith("langchain_trim.lab."):
            continue
        for dep, lazy in edges.items():
            if dep.startswith("langchain_trim.lab") and not (name == "langchain_trim.cli" and lazy):
                offenders.append(f"{name} -> {dep}")
    assert offenders == []
    lab = [n for n in graph if n.startswith("langchain_trim.lab.")]
    assert {"langchain_trim.lab.ppo", "langchain_trim.lab.sim.env"} <= set(lab)


# -- the base install ---------------------------------------------------------------------------
HEAVY = (
    "numpy",
    "scipy",
    "torch",
    "llama_cpp",
    "safetensors",
    "matplotlib",
    "tqdm",
    "transformers",
    "vllm",
    "datasets",
    "math_verify",
    "huggingface_hub",
)
"""What the extras add; ``pip install langchain-trim`` (or ``[cli]``) has none of it."""

BLOCK = f"""
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {HEAVY!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)")
        return None

sys.meta_path.insert(0, NotInstalled())
"""

BASE = """
import langchain_trim
from langchain_trim import ThresholdPolicy, create_trim_graph, solve
from langchain_trim.policies.registry import make_policy
from langchain_trim.prm.registry import make_prm
from langchain_trim.server import make_graph
from langchain_trim.testing import FakeStepModel, KeywordPRM

weak = FakeStepModel(steps=["Let x = 3 * 4.", "So x = 13. WRONG", r"The answer is \\boxed{13}."])
strong = FakeStepModel(steps=["Let x = 3 * 4.", "So x = 12.", r"The answer is \\boxed{12}."])
prm = KeywordPRM({"WRONG": 0.1}, default=0.9)
graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5)).compile()
out = graph.invoke({"question": "What is 3 * 4?"})
assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak"], out
policy = ThresholdPolicy(0.5)
result = solve("What is 3 * 4?", draft_model=weak, strong_model=strong, prm=prm, policy=policy)
assert result.escalated_steps == 1
for spec in ("thr:0.3", "weak", "strong", "random:0.2", "weakscored"):
    make_policy(spec)
assert make_prm("confidence") is not None and make_prm("none") is None
fake = "py:langchain_trim.testing:FakeStepModel"
make_graph({"TRIM_WEAK": fake, "TRIM_STRONG": fake, "TRIM_PRM": "none", "TRIM_POLICY": "weak"})
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
assert not heavy, heavy
print("ok")
"""

HELP = """
import runpy
sys.argv = ["trim", *ARGS]
try:
    runpy.run_module("langchain_trim.cli", run_name="__main__")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
assert not heavy, heavy
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + f"HEAVY = {HEAVY!r}\n" + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_library_works_with_only_its_base_dependencies() -> None:
    done = _run_blocked(BASE)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("args", [["--help"], ["solve", "--help"], ["train", "--help"]])
def test_trim_help_works_with_only_the_cli_extra(args: list[str]) -> None:
    done = _run_blocked(f"ARGS = {args!r}\n" + HELP)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Usage" in done.stdout
