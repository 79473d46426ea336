"""The package's shape, checked: imports point down the declared layers, functions fit on a screen."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinycnn"

# Lowest first; a module may import from its own layer or any layer below, never above.
LAYERS = [
    ("facts", {"errors", "datasets", "device", "provenance", "atomic"}),
    ("architecture", {"spec", "blocks"}),
    ("models", {"build", "budget", "ladders", "deploy", "memory", "prune", "arena"}),
    ("ingredients", {"data", "batches", "augment", "augmix", "optim", "objective", "averaging", "stepper", "recipe", "corruptions", "init"}),
    ("engine", {"engine", "model_array", "callbacks", "checkpoint", "evaluate"}),
    ("runs", {"results", "pipeline", "studies", "export", "cgen", "cwriter", "search", "searchspace", "search_retrain", "robust", "trialseed"}),
    ("views", {"report", "figures", "readme", "phases_table", "search_report", "robust_report", "speed_report"}),
    ("door", {"cli", "__main__"}),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imported_modules(tree: ast.AST) -> set[str]:
    """tinycnn modules imported anywhere in a file, inside functions too."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinycnn."):
            found.add(node.module.split(".")[1])
    return found - {"__init__"}


def test_every_module_has_a_layer():
    assert {p.stem for p in _modules()} == set(LAYER_OF)


def test_imports_point_down_the_layers():
    upward = []
    for path in _modules():
        here = LAYER_OF[path.stem]
        for target in _imported_modules(ast.parse(path.read_text())):
            if target in LAYER_OF and LAYER_OF[target] > here:
                upward.append(f"{path.stem} ({LAYERS[here][0]}) imports {target} ({LAYERS[LAYER_OF[target]][0]})")
    assert not upward, upward


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.stem}.{node.name}: {lines} lines")
    assert not long, long


def test_the_layer_test_sees_an_upward_import():
    tree = ast.parse("from .cli import main\nfrom tinycnn.pipeline import run_or_reuse\n")
    assert _imported_modules(tree) == {"cli", "pipeline"}
