"""Files kiln reads at run time that are not Python code: the built-in template set.

The repository keeps the set at its top level (``templates/``); a wheel, or an
install from an sdist, ships it inside the package as ``builder/templates/``
(see pyproject.toml). An installed kiln finds the packaged copy; a checkout, or
an editable install of one, finds the checkout's ``templates/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_templates(package_dir: Path = PACKAGE_DIR) -> Path:
    """The built-in template set's directory for the package at ``package_dir``.

    When neither place holds it (a broken install) this is the packaged
    location, so that the error kiln reports names where it should be.
    """
    packaged = package_dir / "templates"
    checkout = package_dir.parent / "templates"
    # A checkout has pyproject.toml next to builder/; site-packages does not.
    if (not packaged.is_dir() and checkout.is_dir()
            and (package_dir.parent / "pyproject.toml").is_file()):
        return checkout
    return packaged


BUILTIN_TEMPLATES = builtin_templates()
