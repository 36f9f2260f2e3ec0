"""kiln's own errors.

Every error a user can cause is a :class:`KilnError`. It carries where the
problem is (a file and line, an image, an option) so that the command line can
print it as one sentence; only ``--debug`` shows a traceback. Library code
raises these and never exits; the CLI maps them to exit codes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
