"""Imports point one way (design.md c.2); no print in library code; our `datasets` is ours."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("prior", "fitting", "recon", "datasets", "eval", "configs")

# Rank of a module: a module may import only modules of equal or lower rank.
PRIOR_RANKS = {
    "prior.hands": 0, "prior.atomic": 0, "prior.mano_assets": 0, "prior.standin": 0,
    "prior.anatomy": 0, "prior.standin_mesh": 0, "prior.kinematics": 0, "prior.topology": 0, "prior.codec": 1, "prior.penetration": 1, "prior.denoiser": 2,
    "prior.diffusion": 2, "prior.__main__": 9, "prior": 3,
}  # fmt: skip
PACKAGE_RANKS = {"configs": -1, "prior": 3, "datasets": 1.5, "fitting": 4, "recon": 5, "eval": 6}
ENTRY_POINTS = {"run_fit"}


def rank(module: str) -> float:
    last = module.rsplit(".", 1)[-1]
    if module in ENTRY_POINTS or last in ("__main__", "demo") or last.startswith("cli_"):
        return 9
    if module in PRIOR_RANKS:
        return PRIOR_RANKS[module]
    return PACKAGE_RANKS[module.split(".")[0]]


def project_modules():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(rel.parts)
            yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), path
    yield "run_fit", REPO / "run_fit.py"


def imported(tree: ast.AST, module: str, known: set[str]) -> set[str]:
    """Project modules imported by a module (``from pkg import sub`` counts as ``pkg.sub``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                parts = module.split(".")[: len(module.split(".")) - node.level]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = {f"{base}.{a.name}" for a in node.names} & known
            out.update(subs if len(subs) == len(node.names) else subs | {base})
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _known(m: str, modules: set[str]) -> str | None:
    while m and m not in modules:
        m = m.rpartition(".")[0]
    return m or None


def test_imports_point_one_way():
    mods = dict(project_modules())
    names = set(mods)
    bad = []
    for name, path in mods.items():
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for target in imported(tree, name, names):
            target = _known(target, names)
            if target is None or target == name or target.startswith(name + "."):
                continue
            if name.startswith("datasets") and target.startswith("prior") and rank(target) > 1:
                bad.append(f"{name} -> {target} (datasets may import only the prior foundation)")
            elif rank(target) > rank(name):
                bad.append(f"{name} (rank {rank(name)}) -> {target} (rank {rank(target)})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_bare_import_eval_and_no_print_in_library_code():
    problems = []
    for name, path in project_modules():
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "eval" for a in node.names):
                problems.append(f"{path}: bare `import eval`")
            if rank(name) < 9 and isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                problems.append(f"{path}:{node.lineno}: print in library code")
    assert not problems, "\n".join(problems)


def test_our_datasets_package_is_imported():
    import datasets

    assert Path(datasets.__file__).resolve().is_relative_to(REPO)
