"""The wheel carries its recipes: built from this tree, unpacked, and run where the source is not.

A non-editable install must train the default config (``python -m fcnjax``) and load every
recipe by name: the recipes live at the top level (``configs/``) and setuptools'
``package-dir`` ships them as the package ``fcnjax.configs``. The wheel is
built by pip from a copy of the files setuptools reads (nothing is written into the
repository), unpacked into an empty folder, and run by ``python -S`` from another empty
folder: without ``site`` no ``.pth`` file runs, so the test environment's editable install
(a ``.pth`` import hook) is gone, and the path holds only the unpacked wheel and the
folders the dependencies come from (none of which holds an ``fcnjax``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fcnjax

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
SHIPPED.remove("__init__")
SHIPPED.remove("default")  # every recipe's base (default_config), not a recipe

# Run by the installed fcnjax: every fcnjax module it imports, the recipes by name, a user's
# config extending a shipped one, and `python -m fcnjax` with no arguments (its trainer
# replaced by one that records what it was given: the real default trains for minutes).
CHECKS = """
import json, runpy, sys
from fcnjax import config, train

mine = sys.argv[1]  # a user's config file
seen = {}

def record(c, workdir, *, overwrite=False):
    seen.update(num_steps=c.num_steps, model=c.model.name, workdir=workdir)
    return {"eval": {}, "eval_step": None, "step": 0, "seconds": 0.0, "workdir": workdir,
            "interrupted": None}

train.train_and_evaluate = record
sys.argv = ["fcnjax"]
try:
    runpy.run_module("fcnjax", run_name="__main__", alter_sys=True)
except SystemExit as e:
    seen["exit"] = e.code
result = {
    "names": config.config_names(),
    "cae_mnist": config.load_config("cae_mnist:runlocal").num_steps,
    "fcn8s_voc": config.load_config("fcn8s_voc").optimizer.learning_rate,
    "mine": config.load_config(mine + ":runlocal").num_steps,
    "default": seen,
}
result["modules"] = {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
                     if n == "fcnjax" or n.startswith("fcnjax.")}
print("RESULT " + json.dumps(result))
"""

MINE = """
from fcnjax.configs import shapes_fcn8s


def get_config(arg=None):
    c = shapes_fcn8s.get_config(arg)
    c.num_steps = 3
    return c
"""


def _dependency_paths() -> list[str]:
    """This interpreter's import folders, less any that holds an fcnjax (the source tree)."""
    paths = []
    for p in sys.path:
        if p and Path(p).is_dir() and not (Path(p) / "fcnjax").exists():
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(wheel, site, env)``: the built wheel, the folder it is unpacked in, the child env."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for folder in ("fcnjax", "configs"):
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp / "dist"
    # Offline with the installed setuptools when there is one; else pip fetches it.
    have_setuptools = importlib.util.find_spec("setuptools") is not None
    offline = ["--no-build-isolation", "--no-index"] if have_setuptools else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            *offline,
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        cwd=tmp,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = dist.glob("fcnjax-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *_dependency_paths()]),
        "JAX_PLATFORMS": "cpu",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",  # a few steps need no optimised code
    }
    return wheel, site, env


def _python(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir()
    return subprocess.run(
        [sys.executable, "-S", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_wheel_holds_the_package_and_its_recipes(installed):
    wheel, _, _ = installed
    assert len(SHIPPED) >= 9 and "shapes_fcn8s" in SHIPPED
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {n.split("/")[0] for n in names} == {"fcnjax", f"fcnjax-{fcnjax.__version__}.dist-info"}
    for name in ("__init__", "default", *SHIPPED):
        assert f"fcnjax/configs/{name}.py" in names, name
    assert "fcnjax/configs/README.md" in names
    # every module of the tree (the packages are listed in pyproject.toml: none forgotten)
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fcnjax").rglob("*.py")}
    missing = sorted(tree - names)
    assert not missing, f"modules not in the wheel (add their package to pyproject): {missing}"


def test_the_installed_package_loads_its_recipes_by_name(installed, tmp_path):
    _, site, env = installed
    mine = tmp_path / "my_config.py"
    mine.write_text(MINE)
    run = _python(["-c", CHECKS, str(mine)], env, tmp_path / "empty")
    assert run.returncode == 0, run.stdout + run.stderr
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    modules = result["modules"]
    assert {"fcnjax", "fcnjax.configs", "fcnjax.configs.fcn32s_voc", "fcnjax.cli"} <= set(modules)
    outside = {n: f for n, f in modules.items() if f and not Path(f).is_relative_to(site)}
    assert not outside, outside  # every fcnjax module came from the wheel
    assert result["names"] == SHIPPED
    assert result["cae_mnist"] == 4
    assert result["fcn8s_voc"] == 1e-14  # fcn8s_voc imports fcn32s_voc from the package
    assert result["mine"] == 3
    # `python -m fcnjax`: the default recipe, in full, into runs/shapes_fcn8s
    default = result["default"]
    assert default == {
        "num_steps": 4400,
        "model": "fcn8s",
        "workdir": "runs/shapes_fcn8s",
        "exit": 0,
    }


def test_the_installed_package_trains_a_recipe_by_name(installed, tmp_path):
    _, _, env = installed
    wd = tmp_path / "wd"
    args = ["-m", "fcnjax", "train", "--config", "shapes_fcn8s:runlocal", "--workdir", str(wd)]
    run = _python(args, env, tmp_path / "empty")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "step 4 in" in run.stdout and "mean_iou" in run.stdout
    assert json.loads((wd / "config.json").read_text())["num_steps"] == 4
    assert (wd / "checkpoints" / "4").is_dir()
