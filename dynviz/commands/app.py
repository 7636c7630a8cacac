"""``dynviz app [DIR]``: start the Streamlit route explorer (``apps/explorer.py``) on DIR.

DIR is the folder the explorer searches (recursively) for training runs and records; it reaches
the app through the ``DYNVIZ_APP_DIR`` environment variable and can be changed in the sidebar.

The server listens on 127.0.0.1 unless the user chose an address: ``--address``, a
``--server.address`` option, the ``STREAMLIT_SERVER_ADDRESS`` environment variable or
``server.address`` in a Streamlit ``config.toml`` (``~/.streamlit/`` or ``./.streamlit/``).
Usage statistics are off and the toolbar is the viewer's (no "Deploy" button) unless configured
the same way. Everything else is Streamlit's own:
``STREAMLIT_*`` environment variables (``STREAMLIT_SERVER_PORT``...) and config files apply as
usual, and options after DIR go to ``streamlit run`` unchanged::

    dynviz app runs
    dynviz app runs --server.port 8600 --server.maxUploadSize 20
    STREAMLIT_SERVER_PORT=8600 dynviz app

The server is ``streamlit run`` in a process that first preloads the explorer (issue 26):
``python -m dynviz.commands.app run SCRIPT [OPTIONS]`` (:func:`serve`) imports the explorer's
modules and reads every records folder under DIR into Streamlit's caches (the explorer's
``_state.preload``), then starts the server. It answers a few seconds later than a plain
``streamlit run`` (the imports, about 2 s, and the reading), and its first page is drawn in
about 2 s instead of 4-9 s, when every import and read waited for the first visitor.
``--no-preload`` starts the plain ``streamlit run``: it answers at once and the first visitor
waits. ``scripts/explorer_start.py`` measures both halves in a real browser.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynviz.errors import EXIT_BAD_FILE
from dynviz.explorer import APP_DIR_ENV, explorer_script

__all__ = [
    "APP_DIR_ENV",
    "build_command",
    "configure_parser",
    "explorer_script",
    "is_loopback",
    "main",
    "preload_explorer",
    "serve",
    "served_address",
]

SERVER_MODULE = "dynviz.commands.app"
"""The module ``dynviz app`` runs the server with (``python -m``): :func:`serve`."""

logger = logging.getLogger(__name__)

# Streamlit option -> our default, applied only when the user has not set the option.
_DEFAULTS: dict[str, str] = {
    "server.address": "127.0.0.1",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",  # no "Deploy" button: this is a local tool
}


def _env_name(option: str) -> str:
    """Streamlit's environment variable for an option: ``server.address`` ->
    ``STREAMLIT_SERVER_ADDRESS`` (click's auto_envvar_prefix naming)."""
    section, _, name = option.partition(".")
    snake = "".join(f"_{c}" if c.isupper() else c for c in name)
    return f"STREAMLIT_{section}_{snake}".upper()


def _flag_given(option: str, args: Sequence[str]) -> bool:
    flag = f"--{option}"
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _set_in_config_files(option: str) -> bool:
    """Whether a Streamlit config file (global or project) sets ``option``."""
    try:
        from streamlit import config
    except ImportError:  # pragma: no cover - checked in main
        return False
    options = config.get_config_options(force_reparse=True)
    where = options[option].where_defined if option in options else None
    return where not in (None, config.ConfigOption.DEFAULT_DEFINITION)


def served_address(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The address the server will listen on, as far as the command line and the environment
    say (``--server.address X``, ``--server.address=X``, ``STREAMLIT_SERVER_ADDRESS``); None when
    only a Streamlit config file sets it."""
    flag = "--server.address"
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return env.get(_env_name("server.address"))


def is_loopback(address: str) -> bool:
    """Whether ``address`` only accepts this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def build_command(
    script: Path,
    streamlit_args: Sequence[str] = (),
    *,
    address: str | None = None,
    port: int | None = None,
    headless: bool = False,
    env: Mapping[str, str] | None = None,
    check_config_files: bool = True,
    preload: bool = True,
) -> list[str]:
    """The ``streamlit run`` command line.

    Args:
        script: the app's entrypoint.
        streamlit_args: options for ``streamlit run`` (``--server.port 8600`` ...), unchanged.
        address: ``--server.address``; by default 127.0.0.1 unless the user configured one.
        port: ``--server.port``; by default Streamlit's (its config, env, or 8501).
        headless: do not open a browser.
        env: the environment the server will run in (default ``os.environ``).
        check_config_files: also look for options in Streamlit's config files.
        preload: run ``streamlit run`` through :func:`serve` (``python -m
            dynviz.commands.app run ...``), which preloads the explorer before the server
            listens; False: ``python -m streamlit run ...`` itself.

    Returns:
        The argument vector, starting with this Python interpreter.
    """
    env = os.environ if env is None else env
    module = SERVER_MODULE if preload else "streamlit"
    command = [sys.executable, "-m", module, "run", str(script)]
    passthrough = list(streamlit_args)
    if passthrough and passthrough[0] == "--":
        passthrough = passthrough[1:]
    ours: list[str] = []
    if address is not None:
        ours += ["--server.address", address]
    if port is not None:
        ours += ["--server.port", str(port)]
    if headless:
        ours += ["--server.headless", "true"]
    given = ours + passthrough
    for option, value in _DEFAULTS.items():
        if _flag_given(option, given) or _env_name(option) in env:
            continue
        if check_config_files and _set_in_config_files(option):
            continue
        ours += [f"--{option}", value]
    return command + ours + passthrough


def _add_own_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="address to listen on (default 127.0.0.1 unless Streamlit's config "
        "or STREAMLIT_SERVER_ADDRESS sets one)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: Streamlit's, e.g. STREAMLIT_SERVER_PORT or 8501)",
    )
    parser.add_argument("--headless", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        default=None,
        help="answer at once and read the records on the first visit (default: read them "
        "before the server answers, so that the first page is drawn at once)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the streamlit command and exit"
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="folder searched for runs and records (default: runs if it exists, "
        "else the current folder)",
    )
    _add_own_options(parser)
    parser.add_argument(
        "streamlit_args",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="options after DIR are passed to `streamlit run` (e.g. --server.maxUploadSize 20)",
    )


def _split_remainder(args: argparse.Namespace) -> argparse.Namespace:
    """Our own options may also come after DIR (``dynviz app runs --port 8600``): take them out
    of what goes to Streamlit; a ``--`` ends our options."""
    rest = list(args.streamlit_args)
    tail: list[str] = []
    if "--" in rest:
        at = rest.index("--")
        rest, tail = rest[:at], rest[at + 1 :]
    own = argparse.ArgumentParser(add_help=False)
    _add_own_options(own)
    found, unknown = own.parse_known_args(rest)
    for key, value in vars(found).items():
        if value is not None and (value is not False or key == "preload"):
            setattr(args, key, value)
    args.streamlit_args = unknown + tail
    return args


def main(args: argparse.Namespace) -> int:
    args = _split_remainder(args)
    try:
        script = explorer_script()
        if not script.is_file():
            raise FileNotFoundError(f"{script} is missing: reinstall dynviz")
    except FileNotFoundError as err:
        print(f"error: the explorer is not in this installation ({err})", file=sys.stderr)
        return 2
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print(
            "error: the app needs streamlit and plotly: pip install 'dynviz[app]'", file=sys.stderr
        )
        return 2
    folder = Path(args.dir) if args.dir else (Path("runs") if Path("runs").is_dir() else Path())
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return EXIT_BAD_FILE
    env = dict(os.environ)
    env[APP_DIR_ENV] = str(folder.resolve())
    command = build_command(
        script,
        args.streamlit_args,
        address=args.address,
        port=args.port,
        headless=args.headless,
        env=env,
        preload=args.preload is not False,
    )
    address = served_address(command, env)
    if address is not None and not is_loopback(address):
        # the first line the user sees: the explorer shows DIR to anyone who can reach it
        print(
            f"warning: serving on {address}, not only on this machine: anyone who can reach it "
            f"can browse the runs and records under {folder.resolve()} (and nothing outside it)",
            file=sys.stderr,
        )
    if args.dry_run:
        print(" ".join(command))
        return 0
    logger.info("starting the explorer on %s: %s", folder, " ".join(command[2:]))
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":  # become the server: signals and the exit status are its own
        os.execve(command[0], command, env)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------------- the server
PRELOAD = "preload.py"
"""The explorer's warm-up script, beside its entry script (``apps/preload.py``)."""


def preload_explorer(script: Path, root: str | None = None) -> dict[str, Any]:
    """Run the explorer's warm-up, ``preload.py`` beside ``script``, by path (as ``streamlit
    run`` runs the script: the library imports nothing of the app), with ``ROOT`` the folder
    the explorer shows (None: its default), on a thread named as the explorer's own threads
    are, so that Streamlit's warnings about cached calls outside a session stay quiet. Returns
    the seconds each step took (``imports`` first), with ``"error"`` (a message) when it
    failed: a failure never stops the server, whose pages then read on the first visit and
    show what is wrong."""
    folder = Path(script).resolve().parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the warm-up imports the app's modules by name
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.perf_counter()
        try:
            scope = runpy.run_path(str(folder / PRELOAD), init_globals={"ROOT": root})
            result.update(scope["TIMES"])
        except Exception as err:  # noqa: BLE001 - reported, and the server starts anyway
            result.setdefault("imports", round(time.perf_counter() - started, 3))
            result["error"] = f"{type(err).__name__}: {err}"

    thread = threading.Thread(target=run, name="dynviz-preload")
    thread.start()
    thread.join()
    return result


def serve(argv: Sequence[str]) -> int:
    """``python -m dynviz.commands.app run SCRIPT [OPTIONS]``: ``streamlit run SCRIPT
    [OPTIONS]`` in this process, after :func:`preload_explorer` (the folder shown is
    ``DYNVIZ_APP_DIR``, as for the pages). One line on stderr says what the preload took."""
    from streamlit.web import cli as streamlit_cli

    argv = list(argv)
    if len(argv) >= 2 and argv[0] == "run":
        root = os.environ.get(APP_DIR_ENV)
        print(f"dynviz app: preloading the explorer on {root or '.'}...", file=sys.stderr)
        started = time.perf_counter()
        times = preload_explorer(Path(argv[1]), root)
        took = time.perf_counter() - started
        if "error" in times:
            print(
                f"dynviz app: preloading failed after {took:.1f} s ({times['error']}); the "
                "pages read on the first visit",
                file=sys.stderr,
            )
        else:
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
            print(f"dynviz app: preloaded in {took:.1f} s ({steps})", file=sys.stderr)
        sys.stderr.flush()
    sys.argv = ["streamlit", *argv]
    return streamlit_cli.main(prog_name="streamlit")


if __name__ == "__main__":
    raise SystemExit(serve(sys.argv[1:]))
