"""Kolla's ``customizable`` list filter, shared by kiln's and Kolla's template APIs."""

from __future__ import annotations

import jinja2


def customizable(context, values, list_name: str):
    """Kolla's list hook: ``<image>_<list>_override``, else ``_append`` then ``_remove``."""
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
