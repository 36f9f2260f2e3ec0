"""What templates are given to work with: kiln's template API (or Kolla's) and its filters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

# Lexer options of kiln's template API (they change the compiled code).
KILN_SYNTAX = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}


def customizable(context, values, list_name: str):
    """Kolla's list hook: ``<image>_<list>_override``, else ``_append`` then ``_remove``.

    kiln's version returns a new list and removes every equal item; Kolla's
    (``kolla.api.customizable``) keeps kolla-build's in-place behaviour.
    """
    stem = f"{context['image_name'].replace('-', '_')}_{list_name}_"
    override = context.get(stem + "override")
    if override is not None and not isinstance(override, jinja2.Undefined):
        return list(override)
    result = list(values)
    appended = context.get(stem + "append")
    if appended is not None and not isinstance(appended, jinja2.Undefined):
        result.extend(appended)
    removed = context.get(stem + "remove")
    if removed is not None and not isinstance(removed, jinja2.Undefined):
        removed = list(removed)  # items may be unhashable (dicts of apt keys)
        result = [value for value in result if value not in removed]
    return result


@dataclass(frozen=True)
class ContextAdditions:
    """Files an API adds to one image's build context beside its layer files."""

    # path inside the image directory -> source file (replaces a layer file there)
    files: Mapping[str, Path] = field(default_factory=dict)
    # directories to make even when empty, relative to the image directory
    dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkDirLayout:
    """Where an API puts build contexts in the work dir, and what else it writes there.

    kiln's own: ``<work-dir>/<image>/``, the build contexts alone. Kolla's:
    ``<work-dir>/docker/<the image's directory in the template set>/`` (e.g.
    ``docker/keystone/keystone-base/``), with kolla-build's copies of the
    templates: each image's ``Dockerfile*.j2`` in its context and the set's
    files outside any image (``macros.j2``) under ``docker/``.
    """

    root: str = ""                  # directory of the work dir holding the contexts
    by_directory: bool = False      # a context at the image's directory, not its name
    copies_templates: bool = False

    def context_path(self, name: str, directory: str) -> str:
        """The build context of an image, relative to the work dir."""
        relpath = directory if self.by_directory else name
        return f"{self.root}/{relpath}" if self.root else relpath


KILN_LAYOUT = WorkDirLayout()
KOLLA_LAYOUT = WorkDirLayout(root="docker", by_directory=True, copies_templates=True)


@dataclass(frozen=True)
class TemplateAPI:
    name: str
    syntax: Mapping[str, bool] = field(default_factory=lambda: dict(KILN_SYNTAX))
    # None: jinja2.StrictUndefined or jinja2.Undefined as --undefined says
    undefined: type[jinja2.Undefined] | None = None
    filters: Mapping[str, Callable] = field(default_factory=dict)
    globals: Mapping[str, Any] = field(default_factory=dict)
    # render variables of the whole run, added to (and overriding) kiln's own
    variables: Mapping[str, Any] = field(default_factory=dict)
    # extra render variables of one image, by image name
    image_variables: Callable[[str], Mapping[str, Any]] | None = None
    # (image name, rendered Dockerfile) -> the Dockerfile kiln keeps
    postprocess: Callable[[str, str], str] | None = None
    # True: the first --template-override file is the one rendered and each
    # extends the next, so top-level code runs in file order and a later
    # file's {% set %} wins (Kolla reads its override files as one text)
    overrides_first_on_top: bool = False
    # image name -> files and directories added to its build context
    context_additions: Callable[[str], ContextAdditions] | None = None
    layout: WorkDirLayout = KILN_LAYOUT


KILN_API = TemplateAPI(
    name="kiln",
    filters={"customizable": jinja2.pass_context(customizable)},
)
