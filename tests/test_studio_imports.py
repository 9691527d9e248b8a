"""The command line never loads the studio's web stack: only `sidestep/studio/` imports fastapi, starlette or
uvicorn, nothing outside it imports `sidestep.studio`, and the studio's entry loads them only once it starts."""

import ast
from pathlib import Path

import sidestep

PACKAGE = Path(sidestep.__file__).parent
WEB = ("fastapi", "starlette", "uvicorn")


def imported(path: Path):
    """(module name, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) in top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, id(node) in top


def test_no_command_outside_the_studio_imports_it_or_its_web_stack():
    outside = [p for p in PACKAGE.rglob("*.py") if "studio" not in p.relative_to(PACKAGE).parts]
    assert len(outside) > 50
    for path in outside:
        for module, _ in imported(path):
            assert not module.startswith(("sidestep.studio", *WEB)), f"{path} imports {module}"


def test_the_studio_entry_loads_its_web_stack_only_when_it_starts():
    entry = PACKAGE / "studio" / "__main__.py"
    for module, at_top in imported(entry):
        if module.startswith(WEB) or module in ("sidestep.studio.app",):
            assert not at_top, f"{entry} imports {module} at load time"
