"""dynviz as a user gets it: a wheel built from the project, installed into a fresh virtual
environment outside the checkout, finds its presets and its explorer inside the package.

The fresh environment borrows the test environment's third-party packages (torch, pandas,
streamlit...) through a ``.pth`` file, so nothing is downloaded; dynviz itself comes only from the
wheel (the checkout is neither on ``sys.path`` nor the working folder).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
from _records_fixture import shared_explorer_root

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, object]:
    """A fresh venv with the wheel installed; returns its python, scripts folder and a clean
    environment to run it in."""
    home = tmp_path_factory.mktemp("user")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # third-party packages of this test environment (appended after the venv's own site)
    (site / "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
        + ["--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "DYNVIZ_MODELS", "VIRTUAL_ENV") and not k.startswith("PYTEST")
    }
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return {"python": python, "bin": bindir, "env": env, "cwd": home}


def _run(installed: dict, argv: list[str], timeout: float = 300) -> str:
    result = subprocess.run(
        argv,
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_wheel_carries_the_presets_and_the_explorer(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).name for n in names if n.startswith("dynviz/models/")}
    assert presets == {p.name for p in (ROOT / "models").glob("*.yaml")}
    apps = {n.removeprefix("dynviz/apps/") for n in names if n.startswith("dynviz/apps/")}
    assert {"explorer.py", "_state.py"} <= apps
    assert {p.relative_to(ROOT / "apps").as_posix() for p in (ROOT / "apps").rglob("*.py")} <= apps
    assert "dynviz/__main__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # only the package and its metadata: no tests, docs or top-level folders
    assert {n.split("/")[0] for n in names} == {"dynviz", "dynviz-0.1.0.dist-info"}


def test_the_installed_package_is_not_the_checkout(installed):
    out = _run(
        installed,
        [
            str(installed["python"]),
            "-c",
            "import json, dynviz; from dynviz.model import models_dir; "
            "from dynviz.explorer import explorer_script; "
            "print(json.dumps([dynviz.__file__, str(models_dir()), str(explorer_script())]))",
        ],
    )
    package, models, script = (Path(p) for p in json.loads(out))
    venv_dir = Path(installed["python"]).parents[1]
    for path in (package, models, script):
        assert venv_dir in path.parents, path
        assert ROOT not in path.parents, path
    assert script.is_file()


def test_flops_from_the_wheel(installed):
    out = _run(installed, [str(installed["bin"] / "dynviz"), "flops", "layer16"])
    assert "layer16 (dynamic) at 1024x2048" in out
    assert "119.49" in out  # the paper's 119.5 GMACs, every path open
    out = _run(installed, [str(installed["python"]), "-m", "dynviz", "flops", "fcn32s", "--json"])
    assert json.loads(out)["kind"] == "static"
    # a user's own route spec, in the user's folder, on a shipped routing space
    mine = Path(installed["cwd"]) / "mine.yaml"
    mine.write_text("name: mine\nspace: tiny\nchains:\n  - [4, 8, 16, 8, 4]\n")
    out = _run(installed, [str(installed["bin"] / "dynviz"), "flops", "mine.yaml", "--json"])
    assert json.loads(out)["model"] == "mine"


def test_every_preset_builds_from_the_wheel(installed):
    script = (
        "import json, dynviz\n"
        "from dynviz.model import preset_names\n"
        "out = {}\n"
        "for name in preset_names():\n"
        "    model = dynviz.build_model(name)\n"
        "    out[name] = [sum(p.numel() for p in model.parameters()), model.route is not None]\n"
        "print(json.dumps(out))\n"
    )
    built = json.loads(_run(installed, [str(installed["python"]), "-c", script]))
    assert set(built) == {p.stem for p in (ROOT / "models").glob("*.yaml")}
    assert built["layer16"] == [17_784_968, False]
    assert built["fcn32s"][1] is True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_explorer_serves_from_the_wheel(installed, tmp_path_factory):
    pytest.importorskip("streamlit")
    root = shared_explorer_root(tmp_path_factory)
    # the shipped app runs its main page on the records without an exception
    script = (
        "import os, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from dynviz.explorer import APP_DIR_ENV, explorer_script\n"
        f"os.environ[APP_DIR_ENV] = {str(root)!r}\n"
        "at = AppTest.from_file(str(explorer_script()), default_timeout=120).run()\n"
        "assert not at.exception, at.exception\n"
        "print(len(at.sidebar.selectbox), at.sidebar.selectbox[0].value)\n"
    )
    out = _run(installed, [str(installed["python"]), "-c", script])
    assert out.split()[0] == "1"  # the records menu
    # and `dynviz app DIR` starts a server that answers
    port = _free_port()
    process = subprocess.Popen(
        [str(installed["bin"] / "dynviz"), "app", str(root), "--headless", "--port", str(port)],
        cwd=installed["cwd"],
        env=installed["env"],
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
