"""Every error kiln reports to a user, and every exit code.

Every error a user can cause is a :class:`KilnError`. It carries where the
problem is (a file and line, an image, an option) so that the command line can
print it as one sentence; only ``--debug`` shows a traceback. Library code
raises these and never exits; the CLI maps them to exit codes.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_BUILD_FAILED = 1    # also: a registry operation or an image of a sync failed
EXIT_USAGE = 2
EXIT_STOPPED = 75        # KILN_SYNC_STOP_AFTER stopped a sync on purpose (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130

_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^/\s]*@", re.IGNORECASE)


def scrub_url(text: str) -> str:
    """Remove ``user:password@`` (or ``token@``) from every ``scheme://`` URL in ``text``.

    An error message may quote a URL; it must never quote its credentials.
    """
    return _USERINFO.sub(r"\g<scheme>", text)


class KilnError(Exception):
    """Base of every error kiln reports to a user."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | None = None,
                 line: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint

    def where(self) -> str:
        if self.path is None:
            return ""
        if self.line is None:
            return str(self.path)
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class ConfigError(KilnError):
    """A bad option value, config file or profile."""


class TemplateError(KilnError):
    """A template failed to load or render (syntax, undefined name, missing include)."""


class DockerfileError(KilnError):
    """A rendered Dockerfile cannot be understood."""


class GraphError(KilnError):
    """The image graph is not a DAG or names an image that does not exist."""


class BuildError(KilnError):
    """An image failed to build; ``tail`` holds the last lines of its output."""

    exit_code = EXIT_BUILD_FAILED

    def __init__(self, message: str, *, image: str | None = None,
                 tail: tuple[str, ...] = (), **kwargs):
        super().__init__(message, **kwargs)
        self.image = image
        self.tail = tuple(tail)


class SourceError(KilnError):
    """An image's source cannot be read, fetched, verified or archived.

    The message (and ``location``) are scrubbed of credentials however the
    error was built.
    """

    def __init__(self, message: str, *, image: str | None = None,
                 location: str | None = None, hint: str | None = None, **kwargs):
        super().__init__(scrub_url(message), hint=scrub_url(hint) if hint else hint, **kwargs)
        self.image = image
        self.location = scrub_url(location) if location else location


class RegistryError(KilnError):
    """A registry cannot be reached, refused a request, or lacks what was asked for."""

    exit_code = EXIT_BUILD_FAILED

    def __init__(self, message: str, *, registry: str | None = None,
                 repository: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.registry = registry
        self.repository = repository


class Cancelled(RegistryError):
    """A copy stopped because it was asked to (Ctrl-C): its manifest was not put."""


class CatalogUnavailable(RegistryError):
    """The registry does not list its repositories (GET /v2/_catalog refused)."""


class SyncError(KilnError):
    """An image cannot be synced, promoted or listed as asked."""

    exit_code = EXIT_BUILD_FAILED


class EngineError(KilnError):
    """The engine cannot be reached or refused an operation."""


class MissingExecutable(EngineError):
    """The program a container was to run is not in its image (e.g. no /bin/sh)."""


class PushError(KilnError):
    """Pushing an image to a registry failed."""

    exit_code = EXIT_BUILD_FAILED


class BuildCancelled(KilnError):
    """The run was interrupted while this image was building."""


class ScanError(KilnError):
    """The package scan of a built image failed; the image is not complete."""


class WorkDirBusy(ConfigError):
    """Another run holds the work dir."""


class ContextFileError(KilnError):
    """A file of an image directory that cannot be part of a build context."""


class ClusterError(KilnError):
    """The Dask cluster of --executor dask cannot be used (scheduler, workers, engines)."""
