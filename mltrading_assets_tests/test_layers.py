"""The code's shape, enforced: imports point down the layers of the README's Layout section
(cli → definitions → defs → lib → the engine), no folder has an import cycle, and the
engine never imports Dagster. The contracts are import-linter's, in pyproject.toml."""

import subprocess
import sys
import tomllib
from pathlib import Path

from mltrading_assets.paths import PROJECT_ROOT


def _contracts() -> list[dict]:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_imports_point_down_and_make_no_cycle():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_package_has_a_layer():
    # A module outside every layer would be free to import anything: a new package must be
    # placed in the Layout before it is used.
    [layers] = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    package = PROJECT_ROOT / "mltrading_assets"
    top_level = {
        f"mltrading_assets.{path.stem if path.is_file() else path.name}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert top_level - placed == set()


def test_loading_the_code_location_leaves_the_model_libraries_unloaded():
    # Every run process, every step's forkserver and the code server load the definitions;
    # scikit-learn alone added ~0.8 s to each, for the few runs that train or score a model.
    heavy = ("sklearn", "scipy", "lightgbm", "mlflow")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mltrading_assets.definitions; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    assert loaded == ""
