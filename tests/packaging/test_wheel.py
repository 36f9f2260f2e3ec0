"""kiln as a user gets it: an sdist and a wheel built from this checkout, the wheel
installed into a new virtual environment, its console scripts run from a directory
outside the checkout with no other kiln on PATH.

Offline: the sdist and the wheel are built with this environment's setuptools
(``--no-build-isolation``, setuptools is in the ``test`` extra), and the new
environment sees this environment's packages, kiln's own files excepted, through
a ``.pth`` file, so pip resolves kiln's dependencies without an index.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import builder

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("kiln-build", "kiln-registry")
# What a fresh clone does not have: a copy of the checkout leaves these out.
_ANYWHERE = shutil.ignore_patterns(
    ".git", ".venv", ".tox", "*.egg-info", "__pycache__", "*.py[cod]", ".pytest_cache",
    ".hypothesis")
_AT_THE_TOP = {"build", "dist", "kiln-work"}     # as .gitignore has them: /build/ ...


def NOT_IN_A_CLONE(directory: str, names: list[str]) -> set[str]:
    ignored = set(_ANYWHERE(directory, names))
    if Path(directory) == ROOT:
        ignored |= _AT_THE_TOP & set(names)
    return ignored
# Variables that could make the new environment import something else.
FOREIGN_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
                     "VIRTUAL_ENV", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    venv: Path
    env: dict[str, str]
    outside: Path    # a directory outside the checkout to run from

    def run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return _run([str(a) for a in args], cwd=cwd or self.outside, env=self.env)


def _run(command: list[str], check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=300, **kwargs)
    if check:
        assert result.returncode == 0, (f"{' '.join(command)} exited {result.returncode}:\n"
                                        f"{result.stdout}\n{result.stderr}")
    return result


def _is_kiln_file(name: str, recorded: set[str]) -> bool:
    return (name in recorded or name == "builder" or name.endswith(".pth")
            or (name.startswith("kiln-") and name.endswith((".dist-info", ".egg-info")))
            or (name.startswith("__editable__") and "kiln" in name))


def _dependencies_dir(target: Path) -> Path:
    """This environment's packages, kiln's files excepted, as links in ``target``."""
    try:
        files = importlib.metadata.distribution("kiln").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    recorded = {Path(f).parts[0] for f in files} - {"..", "__pycache__"}
    target.mkdir()
    site_dirs = [d for d in (*site.getsitepackages(), site.getusersitepackages())
                 if d in sys.path and os.path.isdir(d)]
    for site_dir in site_dirs:
        for name in sorted(os.listdir(site_dir)):
            link = target / name
            if _is_kiln_file(name, recorded) or link.is_symlink():
                continue
            link.symlink_to(Path(site_dir) / name)
    return target


def _clean_env(venv_dir: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / script).exists() for script in SCRIPTS)]
    env["PATH"] = os.pathsep.join([str(venv_dir / "bin"), *path])
    env["XDG_CACHE_HOME"] = str(cache)
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_CONFIG_FILE"] = os.devnull   # no index, no find-links: only what is installed
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "clone"
    shutil.copytree(ROOT, src, ignore=NOT_IN_A_CLONE, symlinks=True)
    dist = tmp / "dist"
    env = _clean_env(tmp / "venv", tmp / "cache")
    # As `python -m build` does: the sdist from the source tree, the wheel from the sdist.
    _run([sys.executable, "-c", "import sys, setuptools.build_meta as backend; "
          "backend.build_sdist(sys.argv[1])", str(dist)], check=True, cwd=src, env=env)
    (sdist,) = dist.glob("kiln-*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--wheel-dir", str(dist), str(sdist)], check=True, cwd=tmp, env=env)
    (wheel,) = dist.glob("kiln-*.whl")

    venv_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(venv_dir)
    python = venv_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   check=True, env=env).stdout.strip()
    deps = _dependencies_dir(tmp / "deps")
    (Path(purelib) / "kiln-test-dependencies.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--no-index", str(wheel)], check=True, cwd=tmp, env=env)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return Installed(sdist, wheel, venv_dir, env, outside)


def _checkout_files(directory: str) -> set[str]:
    root = ROOT / directory
    return {path.relative_to(root).as_posix() for path in root.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def test_the_wheel_and_the_sdist_carry_the_builtin_template_set(installed):
    templates = _checkout_files("templates")
    assert "base/Dockerfile.j2" in templates and "macros.j2" in templates
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    assert {f"builder/templates/{name}" for name in templates} <= in_wheel
    assert {f"builder/{name}" for name in _checkout_files("builder")
            if name.endswith(".py")} <= in_wheel
    assert not [name for name in in_wheel
                if name.startswith(("templates/", "tests/")) or "__pycache__" in name]
    with tarfile.open(installed.sdist) as sdist:
        in_sdist = {name.partition("/")[2] for name in sdist.getnames()}
    assert {f"templates/{name}" for name in templates} <= in_sdist
    assert {"pyproject.toml", "README.md", "etc/kiln-build.conf.sample",
            "overrides/kiln.conf"} <= in_sdist


def test_the_kiln_that_runs_is_the_wheel_in_the_new_environment(installed):
    venv_dir = installed.venv.resolve()
    for script in SCRIPTS:
        assert shutil.which(script, path=installed.env["PATH"]) == str(
            installed.venv / "bin" / script)
    result = installed.run(
        installed.venv / "bin" / "python", "-c",
        "import builder, builder.resources as r, importlib.metadata as m\n"
        "print(builder.__file__)\n"
        "print(r.BUILTIN_TEMPLATES)\n"
        "print(m.distribution('kiln').locate_file(''))\n"
        "print(m.version('kiln'))")
    assert result.returncode == 0, result.stderr
    module, templates, location, version = result.stdout.splitlines()
    for path in (module, templates, location):
        assert Path(path).resolve().is_relative_to(venv_dir), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
    assert Path(templates).name == "templates" and Path(templates).parent.name == "builder"
    assert version == builder.__version__


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_console_scripts_print_the_version(installed, script):
    result = installed.run(script, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{script} {builder.__version__}\n"


def test_installed_kiln_registry_runs(installed):
    result = installed.run("kiln-registry", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kiln-registry")


def test_installed_kiln_build_lists_the_builtin_set(installed, kiln):
    expected = kiln("--list-images")     # this checkout's templates/, in-process
    assert expected.code == 0, expected.err
    result = installed.run("kiln-build", "--list-images")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.out
    assert {"base", "python-base", "keystone"} <= set(result.stdout.split())


def _tree(root: Path) -> dict[str, bytes]:
    """The build contexts under a work dir (kiln's own dot files at its top left out)."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.relative_to(root).parts[0].startswith(".")}


@pytest.mark.parametrize("image", ["python-base", "keystone"])
def test_installed_kiln_build_renders_like_the_checkout(installed, kiln, tmp_path, image):
    work = installed.outside / f"work-{image}"
    result = installed.run("kiln-build", "--template-only", "--work-dir", work, image)
    assert result.returncode == 0, result.stderr
    assert (work / image / "Dockerfile").read_text().startswith("FROM ")
    expected = kiln("--template-only", "--work-dir", tmp_path / "w", image)
    assert expected.code == 0, expected.err
    rendered = _tree(work)
    assert rendered == _tree(tmp_path / "w")
    # keystone's context has a .py file: pip compiled it next to the installed
    # template, and that __pycache__ must not join the build context.
    assert not [name for name in rendered if "__pycache__" in name]
