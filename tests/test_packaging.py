"""Packaging: every gankern name the README shows resolves as written, and pyproject.toml declares every package
gankern imports (the wheel itself is installed into a clean venv and run by .ci/wheel_check.sh)."""
import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
PYPROJECT = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
NAME = r"[A-Za-z][A-Za-z0-9_]*"
DOTTED = re.compile(rf"\bgankern(?:\.{NAME})+")


def readme_names() -> tuple[set[str], set[tuple[str, str]]]:
    """(dotted names used as attributes after `import gankern`, (module, name) pairs of `from M import N` lines).

    Dotted names are taken from the whole README; in the op-family table, a bare name in the public-API cell
    (`adain(...)` after `gankern.ops.bias_act(...)`) is relative to the module of the last dotted name before it."""
    dotted = set(DOTTED.findall(README))
    froms = {(m, n.strip()) for m, names in re.findall(rf"from (gankern[\w.]*) import ({NAME}(?:, *{NAME})*)", README)
             for n in names.split(",")}
    header = None
    for line in README.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if "public API" not in header or len(cells) != len(header) or set(cells[0]) <= set("-: "):
            continue
        prefix = None
        for span in re.findall(r"`([^`]*)`", cells[header.index("public API")]):
            head = re.match(rf"{NAME}(?:\.{NAME})*", span)
            if head is None:
                continue
            if head.group(0).startswith("gankern."):
                prefix = head.group(0).rsplit(".", 1)[0]
            elif prefix and "." not in head.group(0):
                dotted.add(f"{prefix}.{head.group(0)}")
    return dotted, froms


def test_readme_names_resolve_as_written():
    dotted, froms = readme_names()
    public = sorted(n for n in dotted if not any(p.startswith("_") for p in n.split(".")))
    assert len(public) >= 30 and "gankern.metrics.FIDInceptionV3" in public and "gankern.ops.adain" in public
    assert ("gankern.nn.utils", "spectral_norm") in froms
    # a fresh interpreter that only ran `import gankern`, as the README's snippets do
    script = (
        "import importlib, json, sys\nimport gankern\nbad = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    obj = gankern\n"
        "    try:\n"
        "        for part in name.split('.')[1:]:\n"
        "            obj = getattr(obj, part)\n"
        "    except AttributeError as e:\n"
        "        bad.append(f'{name}: {e}')\n"
        "for mod, attr in json.loads(sys.argv[2]):\n"
        "    if not hasattr(importlib.import_module(mod), attr):\n"
        "        bad.append(f'from {mod} import {attr}')\n"
        "print(json.dumps(bad))\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(public), json.dumps(sorted(froms))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> dict[str, bool]:
    """Top-level third-party modules imported anywhere in gankern/ -> True when every import of it is optional (inside
    a try whose handlers catch ImportError). torch.utils.tensorboard counts as the tensorboard package."""
    found: dict[str, bool] = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "gankern")):
        for f in files:
            if not f.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(dirpath, f)).read())
            optional_nodes = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Try) and any(
                        h.type is None or "ImportError" in ast.dump(h.type) for h in node.handlers):
                    optional_nodes.update(id(n) for stmt in node.body for n in ast.walk(stmt))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for m in mods:
                    top = "tensorboard" if m.startswith("torch.utils.tensorboard") else m.split(".")[0]
                    if top in sys.stdlib_module_names or top == "gankern":
                        continue
                    found[top] = found.get(top, True) and id(node) in optional_nodes
    return found


def test_pyproject_declares_every_package_gankern_imports():
    deps = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {_requirement_name(r) for reqs in PYPROJECT["project"]["optional-dependencies"].values() for r in reqs}
    dists = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "numpy", "PIL", "sklearn", "safetensors"} <= set(imports)
    missing = []
    for mod, optional in sorted(imports.items()):
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        if not names & deps and not (optional and names & extras):
            missing.append(f"{mod} ({'/'.join(sorted(names))}{', optional import' if optional else ''})")
    assert missing == [], f"imported by gankern but not declared in pyproject.toml: {missing}"
    # the README's extras exist
    for extra in re.findall(r"gankern\[([\w,-]+)\]", README):
        assert set(extra.split(",")) <= set(PYPROJECT["project"]["optional-dependencies"]), extra


def test_readme_names_every_config():
    """The README stays current with the table of configs: each name appears in it as a word (a command, a table
    row or the list of the literature's GANs)."""
    import re

    from gankern.train.config import CONFIGS
    text = open(os.path.join(ROOT, "README.md")).read()
    missing = [n for n in CONFIGS if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
    assert not missing, f"configs the README does not name: {missing}"
