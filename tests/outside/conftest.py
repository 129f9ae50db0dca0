"""The outside-in suite: gptref as a user meets it, never as this repository runs it.

Every test here runs the ``gptref`` console script (or ``python``) of a fresh virtual
environment, as a subprocess, in a temporary folder outside the repository, with output to
pipes or files: the wheel is built from this checkout (``pip wheel``, not an editable
install) and installed into that environment, the repository is on no ``sys.path`` and no
``PYTHONPATH``. The environment reuses this interpreter's installed packages (torch above
all) through ``--system-site-packages`` and, when this interpreter is itself a virtual
environment, a ``.pth`` line naming its site-packages (a path line only: the ``.pth`` files
there, an editable gptref's included, are not run), so it costs seconds, not gigabytes.

The wheel and the environment are built once per session, and shared by pytest-xdist's
workers (a file lock, as pytest-xdist's documentation suggests). Each test takes a fresh
folder (``outside``) to run in.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# what a journey's environment keeps of ours: nothing that points Python or pytest elsewhere
DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTEST_", "COV_CORE_")


@dataclass(frozen=True)
class Installed:
    """A virtual environment holding the gptref wheel of this checkout."""

    venv: Path
    wheel: Path

    @property
    def source(self) -> Path:
        """The copy of this checkout's files the wheel was built from."""
        return self.venv.parent / "src"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def site_packages(self) -> Path:
        paths = sysconfig.get_paths(vars={"base": str(self.venv), "platbase": str(self.venv)})
        return Path(paths["purelib"])

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a user of this venv has: its bin/ first on PATH, activated."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return {**env, **extra}

    def gptref(self, *args: str, cwd: Path, timeout: float = 300, **kw) -> Result:
        """``gptref ARGS`` (the console script) in ``cwd`` -> its exit status and output."""
        return self.run([str(self.bin / "gptref"), *args], cwd=cwd, timeout=timeout, **kw)

    def run(self, argv: Sequence[str], *, cwd: Path, timeout: float = 300, **env: str) -> Result:
        check_outside(cwd)
        try:
            proc = subprocess.run(argv, cwd=cwd, env=self.env(**env), capture_output=True,
                                  text=True, timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{' '.join(argv)} in {cwd}: no end after {timeout} s; output: {e.output}")
        return Result(list(argv), cwd, proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Result:
    argv: list[str]
    cwd: Path
    status: int
    stdout: str
    stderr: str

    @property
    def log(self) -> str:
        """The command and what it printed: the message of a failed assertion."""
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(self.argv))
        return (f"$ {command}   (in {self.cwd}; exit {self.status})\n--- stdout\n"
                f"{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}")  # fmt: skip


def check_outside(folder: Path) -> None:
    """A journey runs outside the repository, or it proves nothing."""
    if folder.resolve().is_relative_to(REPO):
        raise AssertionError(f"{folder} is inside the repository {REPO}")


def _sources() -> list[Path]:
    """The files a user's clone has: git's tracked and untracked-but-not-ignored files."""
    if (REPO / ".git").exists():
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard",
                                 "-z"], capture_output=True, check=True).stdout  # fmt: skip
        names = [n for n in listed.decode().split("\0") if n]
    else:  # an unpacked source tree
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not any(part.startswith(".") for part in p.parts)]  # fmt: skip
    return [Path(n) for n in sorted(names) if (REPO / n).is_file()]


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256(sys.version.encode())
    for name in files:
        h.update(str(name).encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build(home: Path, files: list[Path]) -> Installed:
    """Copy the sources, build the wheel, make the venv and install the wheel into it."""
    src, dist, venv = home / "src", home / "dist", home / "venv"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    quiet = {"capture_output": True, "text": True, "check": False}

    def step(argv: list[str]) -> None:
        proc = subprocess.run(argv, **quiet)
        if proc.returncode != 0:
            pytest.fail(f"building the journeys' environment: {' '.join(argv)} failed:\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")  # fmt: skip

    # no build isolation: the build backend (setuptools) comes from this environment, offline
    step([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(dist), str(src)])  # fmt: skip
    (wheel,) = dist.glob("gptref-*.whl")
    step([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)])
    installed = Installed(venv, wheel)
    if sys.prefix != sys.base_prefix:  # this interpreter is a venv: its packages, after the wheel
        outer = [p for p in site.getsitepackages() if Path(p) != installed.site_packages]
        (installed.site_packages / "_gptref_journeys_outer.pth").write_text("\n".join(outer) + "\n")
    # --ignore-installed: a gptref of the same version in the outer environment (tox installs
    # one) would otherwise count as "already installed" through that .pth line, and pip would
    # install nothing here
    step([sys.executable, "-m", "pip", "--python", str(installed.python), "install", "-q",
          "--ignore-installed", "--no-deps", "--no-index", str(wheel)])  # fmt: skip
    # torch's own console script, as a venv with torch installed has it (the docs run torchrun)
    torchrun = installed.bin / "torchrun"
    torchrun.write_text(f"#!{installed.python}\nimport sys\nfrom torch.distributed.run import main\n"
                        "sys.exit(main())\n")  # fmt: skip
    torchrun.chmod(0o755)
    if not (installed.bin / "gptref").is_file():
        pytest.fail(
            f"building the journeys' environment: {wheel.name} installed no "
            f"console script into {installed.bin}"
        )
    return installed


Build = Callable[[Path], object]


@pytest.fixture(scope="session")
def once(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """``once(name, build) -> folder``: ``build(folder)`` runs once in the session, whichever
    pytest-xdist worker asks first; the others wait for it and reuse the folder (read only)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base  # all workers'

    def run(name: str, build: Build) -> Path:
        home = shared / name
        with open(str(home) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (shared / f"{name}.done").is_file():
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir()
                build(home)
                (shared / f"{name}.done").write_text("")
        return home

    return run


@pytest.fixture(scope="session")
def installed(once) -> Installed:
    """gptref's wheel, built from this checkout, installed in a fresh venv (once a session)."""
    files = _sources()
    home = once(f"gptref-wheel-{_digest(files)}", lambda home: _build(home, files))
    return Installed(home / "venv", next((home / "dist").glob("gptref-*.whl")))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A fresh folder outside the repository, the current folder of a journey."""
    folder = tmp_path / "user"
    folder.mkdir()
    check_outside(folder)
    return folder
