"""dynviz as a user gets it: the wheel built from the project, installed from the package index
into fresh virtual environments that borrow nothing from the test environment, as the README
says (``torch==2.13.0`` first, then the wheel): once with no extras and once with ``[app]``.

In each: every command's ``--help``, ``python -m dynviz``, a 10-iteration ``train`` and a
``record`` on synthetic data. Without extras also ``analyze`` (networkx at its floor, 3.4), the
presets, ``flops``, and the one-line errors of the parts that need an extra; with ``[app]`` one
explorer page through streamlit's AppTest and ``dynviz app`` answering over HTTP.

The installs are slow (pip, about two minutes each): those tests are marked ``slow``, and
``make test`` runs them on their own after the fast suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
"""What the README installs first (the local CPU wheel; pip never resolves another torch)."""
FLOORS = {"networkx": "3.4"}
"""Dependencies installed at their floor in the no-extras environment, so the floors are tested."""
EXTRAS = ("streamlit", "plotly", "onnx", "onnxscript", "onnxruntime", "cityscapesscripts")
DATA = "synthetic:count=4,size=64x64,classes=4,seed=0"

pytest.importorskip("hatchling")  # the build backend (the test extra installs it)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (found,) = out.glob("dynviz-*.whl")
    return found


def test_the_wheel_carries_the_presets_the_explorer_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).name for n in names if n.startswith("dynviz/models/")}
    assert presets == {p.name for p in (ROOT / "models").glob("*.yaml")}
    apps = {n.removeprefix("dynviz/apps/") for n in names if n.startswith("dynviz/apps/")}
    assert {"explorer.py", "_state.py"} <= apps
    assert {p.relative_to(ROOT / "apps").as_posix() for p in (ROOT / "apps").rglob("*.py")} <= apps
    assert "dynviz/__main__.py" in names and "dynviz/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # only the package and its metadata: no tests, docs or top-level folders
    assert {n.split("/")[0] for n in names} == {"dynviz", "dynviz-0.1.0.dist-info"}
    with zipfile.ZipFile(wheel) as archive:
        license_text = archive.read("dynviz-0.1.0.dist-info/licenses/LICENSE").decode()
        meta = Parser().parsestr(archive.read("dynviz-0.1.0.dist-info/METADATA").decode())
    assert license_text == (ROOT / "LICENSE").read_text() and "Apache License" in license_text
    assert meta["License-Expression"] == "Apache-2.0"
    requires = meta.get_all("Requires-Dist")
    assert "networkx>=3.4" in requires and "torch>=2.13" in requires
    assert any(r.startswith("onnxscript") and "extra == 'export'" in r for r in requires)
    assert any(r.startswith("nbclient") and "extra == 'test'" in r for r in requires)
    assert not any(r.startswith("nbmake") for r in requires)


# ------------------------------------------------------------------------ fresh installs
@dataclass
class Install:
    """A virtual environment with the wheel installed, and a user's folder to work in."""

    extras: str
    python: Path
    bin: Path
    env: dict[str, str]
    home: Path
    made: dict[str, Path] = field(default_factory=dict)

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 300):
        done = subprocess.run(
            argv, cwd=self.home, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert done.returncode == 0, f"{argv}: {done.stderr[-3000:]}"
        return done

    def dynviz(self, *argv: str, check: bool = True, timeout: float = 300):
        return self.run([str(self.bin / "dynviz"), *argv], check=check, timeout=timeout)

    def py(self, script: str) -> str:
        return self.run([str(self.python), "-c", script]).stdout


def _clean_env() -> dict[str, str]:
    """This environment less what would make the fresh one see the test environment or the
    checkout (pip's own settings, such as where the torch wheel lies, stay)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "DYNVIZ_MODELS", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST")}
    env["PYTHONNOUSERSITE"] = "1"  # no ~/.local site-packages either
    env["OMP_NUM_THREADS"] = "1"
    return env


def _install(wheel: Path, root: Path, extras: str) -> Install:
    env = _clean_env()
    venv_dir = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv_dir)], check=True, env=env)
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_dir)
    # the versions CI tests, except the floors tested here
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.split("==")[0].lower() not in FLOORS or extras
    ]
    if not extras:
        pins += [f"{name}=={version}" for name, version in FLOORS.items()]
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints)]
    for what in ([TORCH], [f"{wheel}[{extras}]" if extras else str(wheel)]):
        done = subprocess.run(
            [*pip, *what], env=env, cwd=root, capture_output=True, text=True, timeout=1200
        )
        assert done.returncode == 0, f"pip install {what}: {done.stderr[-3000:]}"
    home = root / "user"
    home.mkdir()
    return Install(extras=extras, python=python, bin=bindir, env=env, home=home)


@pytest.fixture(scope="module")
def plain(wheel, tmp_path_factory) -> Install:
    """``pip install torch==2.13.0`` then ``pip install dynviz-*.whl`` (no extras)."""
    return _install(wheel, tmp_path_factory.mktemp("plain"), "")


@pytest.fixture(scope="module")
def with_app(wheel, tmp_path_factory) -> Install:
    """``pip install torch==2.13.0`` then ``pip install 'dynviz-*.whl[app]'``."""
    return _install(wheel, tmp_path_factory.mktemp("app"), "app")


def _trained_and_recorded(install: Install) -> Path:
    """A 10-iteration run and its records in the user's folder (made once per install):
    ``runs/tiny/`` and ``records/tiny/``, as ``dynviz app`` expects them."""
    if "root" in install.made:
        return install.made["root"]
    root = install.home / "work"
    run, records = root / "runs" / "tiny", root / "records" / "tiny"
    train = ["train", "tiny", "--data", DATA, "--out", str(run), "--iters", "10"]
    install.dynviz(*train, "--batch", "2", "--crop", "64", "64", "--workers", "0")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("iter", 0) for m in metrics if m.get("kind") == "train") == 10
    assert (run / "checkpoint_best.pt").is_file()
    install.dynviz("record", str(run), "--data", DATA, "--out", str(records))
    rows = install.py(
        f"import sys, pandas as pd\nprint(len(pd.read_parquet({str(records / 'images')!r})))\n"
    )
    assert int(rows) == 4
    install.made["root"] = root
    return root


INSTALLS = ["plain", "with_app"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("which", INSTALLS)
def test_the_install_borrows_nothing(which, request):
    install: Install = request.getfixturevalue(which)
    script = (
        "import importlib.util, json, sys, sysconfig, dynviz, networkx, torch\n"
        "from dynviz.model import models_dir\n"
        "from dynviz.explorer import explorer_script\n"
        f"extras = {list(EXTRAS)!r}\n"
        "print(json.dumps({'path': sys.path, 'prefix': sys.prefix,\n"
        "  'files': [dynviz.__file__, torch.__file__, networkx.__file__, str(models_dir()),\n"
        "            str(explorer_script())],\n"
        "  'torch': torch.__version__, 'networkx': networkx.__version__,\n"
        "  'extras': [e for e in extras if importlib.util.find_spec(e)]}))\n"
    )
    found = json.loads(install.py(script))
    venv_dir = install.python.parents[1]
    assert Path(found["prefix"]) == venv_dir
    for path in found["files"]:
        assert venv_dir in Path(path).parents and ROOT not in Path(path).parents, path
    here = {Path(p) for p in sys.path if p and "site-packages" in p}
    assert not here & {Path(p) for p in found["path"]}, "the test environment's packages leak"
    assert not [p for p in found["path"] if p and Path(p).is_relative_to(ROOT)]
    assert found["torch"].startswith("2.13.0")
    if install.extras:
        assert found["extras"] == ["streamlit", "plotly"]
    else:
        assert found["extras"] == [] and found["networkx"] == FLOORS["networkx"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("which", INSTALLS)
def test_every_command_helps(which, request):
    install: Install = request.getfixturevalue(which)
    commands = install.py("import dynviz.cli as cli; print(' '.join(cli.COMMANDS))").split()
    assert {"train", "record", "eval", "predict", "data", "app", "export", "flops"} <= set(commands)
    for command in commands:
        done = install.dynviz(command, "--help")
        assert done.stdout.startswith(f"usage: dynviz {command}"), (command, done.stdout[:200])
        assert "Traceback" not in done.stderr, command
    done = install.run([str(install.python), "-m", "dynviz", "--help"])
    assert all(command in done.stdout for command in commands)
    # no command: the usage, not a traceback
    done = install.run([str(install.python), "-m", "dynviz"], check=False)
    assert done.returncode in (0, 2) and "usage: dynviz" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("which", INSTALLS)
def test_train_and_record_on_synthetic_data(which, request):
    install: Install = request.getfixturevalue(which)
    root = _trained_and_recorded(install)
    assert (root / "records" / "tiny" / "records.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_plain_install_analyzes_builds_presets_and_names_missing_extras(plain):
    root = _trained_and_recorded(plain)
    # analyze writes the route graphs with networkx at its floor (node_link_data(edges=...))
    plain.dynviz("analyze", str(root / "records" / "tiny"), "--out", str(root / "report"))
    graph = json.loads((root / "report" / "space_tiny.json").read_text())
    assert graph["edges"] and (root / "report" / "report.md").is_file()
    # every preset builds from the wheel's own zoo
    script = (
        "import json, dynviz\n"
        "from dynviz.model import preset_names\n"
        "out = {n: [sum(p.numel() for p in dynviz.build_model(n).parameters()),\n"
        "           dynviz.build_model(n).route is not None] for n in preset_names()}\n"
        "print(json.dumps(out))\n"
    )
    built = json.loads(plain.py(script))
    assert set(built) == {p.stem for p in (ROOT / "models").glob("*.yaml")}
    assert built["layer16"] == [17_784_968, False] and built["fcn32s"][1] is True
    out = plain.dynviz("flops", "layer16").stdout
    assert "layer16 (dynamic) at 1024x2048" in out and "119.49" in out
    mine = plain.home / "mine.yaml"
    mine.write_text("name: mine\nspace: tiny\nchains:\n  - [4, 8, 16, 8, 4]\n")
    assert json.loads(plain.dynviz("flops", "mine.yaml", "--json").stdout)["model"] == "mine"
    # what needs an extra says which, in one line
    for argv, extra in (
        (["app", str(root), "--dry-run"], "app"),
        (["export", "fcn32s", "--out", "fcn32s.onnx"], "export"),
    ):
        done = plain.dynviz(*argv, check=False)
        assert done.returncode == 2, (argv, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith("error: ")
        assert f"pip install 'dynviz[{extra}]'" in done.stderr and "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_app_install_serves_the_explorer(with_app):
    root = _trained_and_recorded(with_app)
    # the shipped explorer's first page on the run and records made in this environment
    script = (
        "import os, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from dynviz.explorer import APP_DIR_ENV, explorer_script\n"
        f"os.environ[APP_DIR_ENV] = {str(root)!r}\n"
        "at = AppTest.from_file(str(explorer_script()), default_timeout=120).run()\n"
        "assert not at.exception, at.exception\n"
        "print([s.value for s in at.sidebar.selectbox], [t.value for t in at.title],\n"
        "      [m.value for m in at.markdown])\n"
    )
    out = with_app.py(script)
    assert "['records/tiny'] ['Overview']" in out and "val_miou" in out  # the run's curves
    # and `dynviz app DIR` starts a server that answers
    port = _free_port()
    process = subprocess.Popen(
        [str(with_app.bin / "dynviz"), "app", str(root), "--headless", "--port", str(port)],
        cwd=with_app.home,
        env=with_app.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"dynviz app exited: {process.stdout.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the explorer did not answer within 90 s")
            time.sleep(0.5)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert "<html" in response.read().decode().lower()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
