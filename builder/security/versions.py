"""Package constraints (``openssl<3.0.15-1~deb12u1``) and version order per ecosystem.

A constraint is ``[KIND:]NAME[OP VERSION]``: KIND one of ``deb``, ``rpm``,
``apk``, ``pypi`` (only packages of that kind; without it, every kind), NAME
a package name (``*`` and ``?`` match any characters, any one character), OP
one of ``<``, ``<=``, ``=`` (or ``==``), ``>=``, ``>``. Without OP any
version matches.

Versions are ordered by each ecosystem's own rules:

- ``deb``: dpkg's, by python-debian (``debian.debian_support.Version``):
  epochs, ``~`` before anything (``3.0.15-1~deb12u1 < 3.0.15-1``), the
  Debian revision. The full versions are compared, as dpkg compares a
  dependency: ``3.0.15`` is older than ``3.0.15-1``.
- ``rpm``: rpm's ``rpmvercmp``, by rpm-version (Python bindings of the
  rpm-rs project's Rust crate): epochs (missing: 0), ``~`` before and ``^``
  after anything. As rpm compares a dependency, a constraint without a
  release (``openssl<3.0.7``) compares epoch and version only.
- ``apk``: apk-tools 3's order (``digit{.digit}...{letter}{_suffix{#}}...
  {~hash}{-r#}``), implemented here from its documented token rules since no
  maintained library on PyPI does it: ``_alpha < _beta < _pre < _rc`` before
  the release, ``_cvs < _svn < _git < _hg < _p`` after it, a version
  component with a leading zero compared as text.
- ``pypi``: PEP 440, by ``packaging.version`` (``1.0 == 1.0.0``); names are
  compared normalised (``Foo_Bar`` is ``foo-bar``).

Every error is a :class:`ConfigError` (bad input, exit 2) naming the
constraint; an installed version that cannot be read raises
:class:`IncomparableVersion`, which the search reports rather than skips.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, field

from builder.errors import ConfigError

KINDS = ("deb", "rpm", "apk", "pypi")
OPERATORS = ("<", "<=", "=", ">=", ">")
EXAMPLE = "give one such as openssl, 'openssl<3.0.15-1~deb12u1' or 'pypi:requests>=2.32'"

_SYNTAX = re.compile(r"\s*(?:(?P<kind>[A-Za-z0-9]+):)?(?P<name>[^<>=!~\s]*)\s*"
                     r"(?:(?P<op>[<>=!~]+)\s*(?P<version>.*?))?\s*")
_NAME = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9._+*?-]*")
_DEB = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*(?<!-)")
_RPM = re.compile(r"(?:[0-9]+:)?[A-Za-z0-9._+~^]+(?:-[A-Za-z0-9._+~^]+)?")


class IncomparableVersion(ValueError):
    """A version that is not one of its ecosystem's (so it cannot be ordered)."""


@dataclass(frozen=True)
class Constraint:
    """``[kind:]name[op version]``; ``kinds``: the ecosystems its version is valid in."""

    name: str
    op: str | None = None
    version: str | None = None
    kind: str | None = None
    kinds: tuple[str, ...] = field(default=KINDS, compare=False)

    def __str__(self) -> str:
        text = f"{self.kind}:{self.name}" if self.kind else self.name
        return f"{text}{self.op}{self.version}" if self.op else text

    @property
    def pattern(self) -> bool:
        return any(c in self.name for c in "*?")

    def names(self, kind: str, name: str) -> bool:
        """Whether a package ``name`` of ``kind`` is one this constraint is about."""
        if self.kind is not None and kind != self.kind:
            return False
        wanted, have = self.name, name
        if kind == "pypi":
            wanted, have = _pypi_name(wanted), _pypi_name(have)
        return fnmatch.fnmatchcase(have, wanted) if self.pattern else have == wanted

    def matches(self, kind: str, version: str) -> bool:
        """Whether an installed ``version`` of ``kind`` satisfies the constraint.

        Raises IncomparableVersion when the installed version, or the
        constraint's version for this kind, cannot be ordered.
        """
        if self.op is None:
            return True
        assert self.version is not None
        if kind not in KINDS:
            raise IncomparableVersion(f"no version order is known for packages of kind "
                                      f"{kind!r}")
        if kind not in self.kinds:
            raise IncomparableVersion(f"{self.version!r} is not a valid {_WHAT[kind]} version "
                                      f"to compare {version!r} with")
        order = compare(kind, version, self.version, release=_has_release(kind,
                                                                          self.version))
        return {"<": order < 0, "<=": order <= 0, "=": order == 0, ">=": order >= 0,
                ">": order > 0}[self.op]


_WHAT = {"deb": "Debian", "rpm": "RPM", "apk": "apk", "pypi": "PEP 440"}


def parse_constraint(text: str) -> Constraint:
    """``[KIND:]NAME[OP VERSION]`` -> Constraint; ConfigError (one sentence) if malformed."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"invalid package constraint {text!r}: {why}")

    if not text.strip():
        raise ConfigError(f"the package constraint is empty ({EXAMPLE})")
    found = _SYNTAX.fullmatch(text)
    if found is None:
        raise bad(f"it is not [KIND:]NAME[OP VERSION] ({EXAMPLE})")
    kind, name, op, version = found.group("kind", "name", "op", "version")
    if kind is not None and kind not in KINDS:
        raise bad(f"unknown package kind {kind!r} (one of {', '.join(KINDS)})")
    if not name:
        raise bad(f"it names no package ({EXAMPLE})")
    if not _NAME.fullmatch(name):
        raise bad(f"{name!r} is not a package name (letters, digits, '.', '_', '+', '-', "
                  f"and the wildcards '*' and '?')")
    if op is None:
        return Constraint(name=name, kind=kind)
    op = "=" if op == "==" else op
    if op not in OPERATORS:
        raise bad(f"unknown operator {op!r} (one of {', '.join(OPERATORS)})")
    if not version:
        raise bad(f"the operator {op} needs a version after it")
    if any(c.isspace() for c in version):
        raise bad(f"the version {version!r} contains white space")
    candidates = (kind,) if kind else KINDS
    valid = tuple(k for k in candidates if version_problem(k, version) is None)
    if not valid:
        if kind:
            raise bad(version_problem(kind, version))
        raise bad(f"{version!r} is not a valid version for any package kind "
                  f"({', '.join(KINDS)})")
    return Constraint(name=name, op=op, version=version, kind=kind, kinds=valid)


def version_problem(kind: str, version: str) -> str | None:
    """Why ``version`` is no valid version of ``kind``, else None."""
    what = _WHAT[kind]
    if kind == "deb":
        if not _DEB.fullmatch(version):
            return (f"{version!r} is not a Debian version ([EPOCH:]UPSTREAM[-REVISION], "
                    f"the upstream part starting with a digit)")
        try:
            _debian()(version)
        except ValueError:
            return f"{version!r} is not a Debian version"
        return None
    if kind == "rpm":
        if not _RPM.fullmatch(version):
            return (f"{version!r} is not an RPM version ([EPOCH:]VERSION[-RELEASE] of "
                    f"letters, digits and '.', '_', '+', '~', '^')")
        return None
    if kind == "apk":
        try:
            _apk_tokens(version)
        except IncomparableVersion:
            return (f"{version!r} is not an apk version "
                    f"(DIGITS{{.DIGITS}}[LETTER]{{_SUFFIX[N]}}[~HASH][-rN])")
        return None
    if kind == "pypi":
        try:
            _pep440()(version)
        except ValueError:
            return f"{version!r} is not a {what} version"
        return None
    raise ValueError(f"unknown package kind {kind!r}")


def compare(kind: str, a: str, b: str, *, release: bool = True) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b`` (of ``kind``).

    ``release=False`` (rpm only): compare epoch and version, not the release.
    Raises IncomparableVersion if either is not a version of ``kind``.
    """
    if kind == "deb":
        version = _debian()
        try:
            left, right = version(a), version(b)
        except ValueError as exc:
            raise IncomparableVersion(f"not a Debian version: {exc}") from None
        return (left > right) - (left < right)
    if kind == "rpm":
        if not release:
            a = _without_release(a)
        return _rpm_compare()(a, b)
    if kind == "apk":
        return apk_compare(a, b)
    if kind == "pypi":
        version = _pep440()
        try:
            left, right = version(a), version(b)
        except ValueError as exc:
            raise IncomparableVersion(f"not a PEP 440 version: {exc}") from None
        return (left > right) - (left < right)
    raise IncomparableVersion(f"no version order is known for packages of kind {kind!r}")


def _has_release(kind: str, version: str) -> bool:
    return kind != "rpm" or "-" in version


def _without_release(version: str) -> str:
    return version.rpartition("-")[0] if "-" in version else version


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _debian():
    from debian.debian_support import Version
    return Version


@functools.cache
def _pep440():
    from packaging.version import Version
    return Version


@functools.cache
def _rpm_compare():
    from rpm_version import evr_compare
    return evr_compare


# -- apk -----------------------------------------------------------------------------------
#
# apk-tools' version grammar, token by token: an initial number, then ".N"
# numbers, one letter, "_suffix" with an optional number (repeatable), a
# "~hexhash", and "-rN"; each token kind may only follow the kinds before it.
# Two versions compare token by token while their token kinds agree; where
# they part, a pre-release suffix is older, otherwise the version whose next
# token comes earlier in that list is the newer one (1.0 < 1.0a < 1.0.1;
# 1.0_rc1 < 1.0 < 1.0_p1 < 1.0a; 1.0 < 1.0-r1).

(_INITIAL, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NUMBER, _HASH, _REVISION,
 _END) = range(8)
_PRE_RELEASE = ("alpha", "beta", "pre", "rc")
_POST_RELEASE = ("cvs", "svn", "git", "hg", "p")
# below 0: before the release; above 0: after it
_SUFFIX_RANK = {**{s: i - len(_PRE_RELEASE) for i, s in enumerate(_PRE_RELEASE)},
                **{s: i + 1 for i, s in enumerate(_POST_RELEASE)}}
_DIGITS = re.compile(r"[0-9]+")
_LOWER = re.compile(r"[a-z]*")
_HEX = re.compile(r"[0-9a-fA-F]*")


def _apk_tokens(version: str) -> list[tuple[int, object]]:
    def invalid(why: str) -> IncomparableVersion:
        return IncomparableVersion(f"{version!r} is not an apk version: {why}")

    number = _DIGITS.match(version)
    if number is None:
        raise invalid("it does not start with a digit")
    tokens: list[tuple[int, object]] = [(_INITIAL, int(number.group()))]
    position, last = number.end(), _INITIAL
    while position < len(version):
        char = version[position]
        if "a" <= char <= "z":
            if last > _DIGIT:
                raise invalid(f"a letter after {_TOKEN_NAMES[last]}")
            token, value, position = _LETTER, char, position + 1
        elif char == "." or "0" <= char <= "9":
            if char == ".":
                if last > _DIGIT:
                    raise invalid(f"'.' after {_TOKEN_NAMES[last]}")
                position += 1
            if last in (_INITIAL, _DIGIT):
                token = _DIGIT
            elif last == _SUFFIX:
                token = _SUFFIX_NUMBER
            else:
                raise invalid(f"a number after {_TOKEN_NAMES[last]}")
            digits = _DIGITS.match(version, position)
            if digits is None:
                raise invalid("'.' without a number after it")
            value = digits.group() if token == _DIGIT else int(digits.group())
            position = digits.end()
        elif char == "_":
            if last > _SUFFIX_NUMBER:
                raise invalid(f"a suffix after {_TOKEN_NAMES[last]}")
            word = _LOWER.match(version, position + 1)
            if word.group() not in _SUFFIX_RANK:
                raise invalid(f"unknown suffix _{word.group()}")
            token, value, position = _SUFFIX, _SUFFIX_RANK[word.group()], word.end()
        elif char == "~":
            if last >= _HASH:
                raise invalid(f"'~' after {_TOKEN_NAMES[last]}")
            digits = _HEX.match(version, position + 1)
            if not digits.group():
                raise invalid("'~' without a hexadecimal hash after it")
            token, value, position = _HASH, digits.group(), digits.end()
        elif char == "-":
            if last >= _REVISION or not version.startswith("-r", position):
                raise invalid("'-' not starting the revision -rN")
            digits = _DIGITS.match(version, position + 2)
            if digits is None:
                raise invalid("-r without a number after it")
            token, value, position = _REVISION, int(digits.group()), digits.end()
        else:
            raise invalid(f"unexpected {char!r}")
        tokens.append((token, value))
        last = token
    tokens.append((_END, None))
    return tokens


_TOKEN_NAMES = {_INITIAL: "the first number", _DIGIT: "a number", _LETTER: "a letter",
                _SUFFIX: "a suffix", _SUFFIX_NUMBER: "a suffix number", _HASH: "a ~hash",
                _REVISION: "the revision"}


def apk_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as apk version ``a`` is older than, the same as or newer than ``b``."""
    for (kind_a, value_a), (kind_b, value_b) in zip(_apk_tokens(a), _apk_tokens(b),
                                                    strict=False):
        if kind_a != kind_b:
            if kind_a == _SUFFIX and value_a < 0:       # a pre-release
                return -1
            if kind_b == _SUFFIX and value_b < 0:
                return 1
            return -1 if kind_a > kind_b else 1
        if kind_a == _END:
            return 0
        if kind_a == _DIGIT and (value_a.startswith("0") or value_b.startswith("0")):
            pass                                        # leading zero: compared as text
        elif kind_a == _DIGIT:
            value_a, value_b = int(value_a), int(value_b)
        if value_a != value_b:
            return -1 if value_a < value_b else 1
    raise AssertionError("both token lists end with _END")
