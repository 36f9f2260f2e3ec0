"""Build contexts on disk, the work dir's lock, and the logs dir.

A context is ``<work-dir>/<image>/Dockerfile`` and the image's files (with
Kolla's API, ``<work-dir>/docker/<group>/<image>/`` and the templates
kolla-build copies: :class:`builder.templating.api.WorkDirLayout`); the logs
dir is never inside a build context.

Every file and directory written gets the same fixed mtime and a normalised
mode, so the same inputs always give byte-identical contexts (and an engine's
layer cache keeps hitting).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from builder.build.sources.archive import FIXED_MTIME
from builder.errors import ConfigError, ContextFileError, KilnError, WorkDirBusy
from builder.templating.api import WorkDirLayout
from builder.templating.layers import NotRegularFile, TemplateSet, file_kind, read_regular
from builder.templating.render import RenderedImage

MARKER = ".kiln-work-dir"
LOCK = ".kiln-lock"


def prepare_work_dir(path: Path | None) -> Path:
    """Create (or reuse) the work dir; never clobber a directory kiln did not make."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="kiln-"))
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--work-dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise ConfigError(
            f"--work-dir {path} is not empty and was not made by kiln; "
            f"choose an empty or new directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).touch()
    except OSError as exc:
        raise ConfigError(f"--work-dir {path}: cannot create it: "
                          f"{exc.strerror or exc}") from exc
    return path


@contextmanager
def locked_work_dir(path: Path | None) -> Iterator[Path]:
    """The work dir (see :func:`prepare_work_dir`), locked for as long as it is used.

    Two runs sharing a work dir would overwrite each other's build contexts
    and logs, so a second run stops at once with a :class:`WorkDirBusy` naming
    the run that holds it. The lock is an ``flock`` on ``.kiln-lock``: the
    system releases it when its holder exits, however it exits.
    """
    path = prepare_work_dir(path)
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"--work-dir {path}: cannot open its lock file {lock}: "
                          f"{exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkDirBusy(
                f"--work-dir {path} is in use by another kiln run "
                f"({_holder(fd)}); wait for it to end or choose another "
                f"--work-dir") from None
        except OSError as exc:
            raise ConfigError(f"--work-dir {path}: cannot lock {lock}: "
                              f"{exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv)}).encode() + b"\n", 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Who holds a work dir's lock, from what it wrote in the lock file."""
    try:
        holder = json.loads(os.pread(fd, 65536, 0))
        return (f"pid {holder['pid']}, started {holder['started']}: "
                f"{holder['command']}")
    except (OSError, ValueError, TypeError, KeyError):
        return "it has not said who it is yet"


def prepare_logs_dir(logs_dir: Path | None, work_dir: Path,
                     contexts: Mapping[str, str]) -> Path:
    """Create (or reuse) the logs dir, never inside a build context.

    ``logs_dir`` None is the default, ``<work-dir>/logs``. ``contexts`` maps
    every image of the set to its context's path in the work dir. A logs dir
    that is (or is inside) one of them would have its logs copied into that
    image and deleted when its context is written again: refused, as is one
    that cannot be made or written.
    """
    option = "--logs-dir" if logs_dir is not None else "the default logs dir"
    given = logs_dir if logs_dir is not None else work_dir / "logs"
    path = Path(os.path.abspath(given.expanduser()))
    real = Path(os.path.realpath(path))
    for name, relpath in contexts.items():
        context = work_dir / relpath
        if real == context or context in real.parents:
            hint = ("give --logs-dir outside it" if logs_dir is None
                    else "choose a logs dir outside it")
            where = "is" if real == context else "is inside"
            raise ConfigError(
                f"{option} {path} {where} the build context of image {name!r} "
                f"({context}): the logs would be copied into the image and "
                f"removed by the next run; {hint}")
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot create it: "
                          f"{exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in it: permission denied")
    return path


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file kiln could not write at the end.

    Missing parent directories are made when the file is written; the
    nearest one that exists must be a directory kiln can write in.
    """
    target = Path(os.path.abspath(path.expanduser()))
    if target.is_dir():
        raise ConfigError(f"{option} {path} is a directory")
    if os.path.lexists(target):
        if not os.access(target, os.W_OK):
            raise ConfigError(f"{option} {path}: cannot write it: permission denied")
        return
    parent = target.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {parent}: permission denied")


def write_context(image: RenderedImage, work_dir: Path) -> Path:
    """Write one image's build context, replacing what an earlier run left.

    Only regular files are copied, each read up to the size it had when
    opened; a FIFO, socket or device, a dangling link or a link leading out
    of the template layer holding it is a :class:`ContextFileError` naming
    the file, raised before anything is removed or written.
    """
    for source in image.context_files.values():
        _check_context_file(f"image {image.name!r}", os.fspath(source), image.layer_roots)
    target = work_dir / image.context_relpath
    if os.path.lexists(target):
        shutil.rmtree(target)
    _make_parents(work_dir, image.context_relpath)
    os.mkdir(target, 0o755)
    directories = {"": target}
    _write(os.path.join(target, "Dockerfile"), image.dockerfile.encode("utf-8"), 0o644)
    for relpath in image.context_dirs:
        _directory(directories, target, relpath)
    for relpath, source in image.context_files.items():
        parent = _directory(directories, target, os.path.dirname(relpath))
        data, mode = _read_context_file(f"image {image.name!r}", os.fspath(source))
        _write(os.path.join(parent, os.path.basename(relpath)), data,
               0o755 if mode & 0o111 else 0o644)
    # deepest first: writing into a directory changes its mtime
    for path in sorted(directories.values(), key=lambda p: str(p).count(os.sep),
                       reverse=True):
        os.chmod(path, 0o755)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return target


def write_shared_files(templates: TemplateSet, layout: WorkDirLayout, work_dir: Path) -> None:
    """The template set's files outside every image (Kolla's ``macros.j2``)
    and the directories grouping its images (Kolla's ``keystone/``), where a
    layout that copies templates has them; nothing for kiln's own.

    Every image's group directories are made, whether or not its context is
    written: kolla-build's work dir keeps them for the images it leaves out.
    A file that cannot be copied is a :class:`ContextFileError` naming it;
    one that cannot be written, a :class:`KilnError` naming the work dir.
    """
    if not layout.copies_templates:
        return
    roots = tuple(layer.root for layer in templates.layers)
    try:
        for image in templates.images.values():
            _make_parents(work_dir, layout.context_path(image.name, image.directory))
        for relpath, source in templates.shared_files().items():
            _check_context_file("the template set", os.fspath(source), roots)
            data, mode = _read_context_file("the template set", os.fspath(source))
            target = os.path.join(layout.root, relpath)
            _make_parents(work_dir, target)
            path = os.path.join(work_dir, target)
            if os.path.lexists(path):
                os.unlink(path)
            _write(path, data, 0o755 if mode & 0o111 else 0o644)
    except OSError as exc:
        raise KilnError(f"cannot write the template set's files in {work_dir}: "
                        f"{exc.strerror or exc}") from exc


def _make_parents(work_dir: Path, relpath: str) -> None:
    """The directories above ``relpath`` in the work dir (Kolla's groups),
    each 0755 whatever the umask; threads writing contexts may race here."""
    current = os.fspath(work_dir)
    for part in relpath.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            continue
        os.chmod(current, 0o755)


def _check_context_file(who: str, path: str, roots: tuple[Path, ...]) -> None:
    """Refuse a file that is not, or does not lead to, a regular file in its layer."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _unreadable(who, path, exc) from exc
    root = _layer_root(path, roots)
    if root is not None:
        real = os.path.realpath(path)
        real_root = os.path.realpath(root)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            link = _outermost_link(path, root)
            raise _refused(who, path, f"leads out of its template layer {root} "
                                        f"(through the symbolic link {link}{_to(link)})"
                           if link and link != path else
                           f"is a symbolic link{_to(path)}, out of its template "
                           f"layer {root}")
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(who, path, file_kind(info.st_mode))


def _read_context_file(who: str, path: str) -> tuple[bytes, int]:
    try:
        return read_regular(path)
    except NotRegularFile as exc:
        raise _not_regular(who, path, exc.kind) from exc
    except OSError as exc:
        raise _unreadable(who, path, exc) from exc


def _not_regular(who: str, path: str, kind: str) -> ContextFileError:
    if os.path.islink(path):
        return _refused(who, path, f"is a symbolic link{_to(path)}, which is {kind}, "
                                     f"not a regular file")
    return _refused(who, path, f"is {kind}, not a regular file")


def _unreadable(who: str, path: str, exc: OSError) -> ContextFileError:
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return _refused(who, path, f"is a dangling symbolic link{_to(path)}")
        return _refused(who, path, "has disappeared")
    return _refused(who, path, f"cannot be read: {exc.strerror or exc}")


def _refused(who: str, path: str, what: str) -> ContextFileError:
    return ContextFileError(
        f"{who}: {path} {what}; a build context holds only regular "
        f"files and links to files inside the template layer")


def _to(link: str | None) -> str:
    if link is None:
        return ""
    try:
        return f" to {os.readlink(link)}"
    except OSError:
        return ""


def _layer_root(path: str, roots: tuple[Path, ...]) -> str | None:
    """The (innermost) layer root ``path`` is written under, if any."""
    found = None
    for root in map(os.fspath, roots):
        if path.startswith(root.rstrip("/") + "/") and (found is None or len(root) > len(found)):
            found = root
    return found


def _outermost_link(path: str, root: str) -> str | None:
    """The first symbolic link on the way from ``root`` down to ``path``."""
    current = root
    for part in os.path.relpath(path, root).split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def _directory(known: dict[str, Path | str], root: Path, relpath: str) -> Path | str:
    """Make (once) the directory ``relpath`` under ``root`` and its parents."""
    if relpath not in known:
        _directory(known, root, os.path.dirname(relpath))
        path = os.path.join(root, relpath)
        os.mkdir(path, 0o755)
        known[relpath] = path
    return known[relpath]


def _write(path: str, data: bytes, mode: int) -> None:
    """A new file with exactly ``mode`` (whatever the umask) and the fixed mtime."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.utime(fd, (FIXED_MTIME, FIXED_MTIME))
    finally:
        os.close(fd)
