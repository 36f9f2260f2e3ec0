"""Read a rendered Dockerfile and find the images it uses.

kiln needs to know, for every rendered Dockerfile, which images it pulls in so
that it can order the builds. The only places a Dockerfile names another image
are the base of a stage (``FROM``), the source of a copy (``COPY --from`` /
``ADD --from``) and the source of a mount (``RUN --mount=...,from=...``).
Everything else is skipped, but the file is still read the way the Docker
builder reads it: parser directives, line continuations, comments, heredocs,
quoting and the ``ARG`` substitution rules all decide which text is an
instruction and what an image reference expands to.

:func:`parse_dockerfile` turns the text into :class:`Instruction` records (one
per logical line, heredoc bodies skipped), then interprets ``ARG``, ``FROM``,
``COPY``, ``ADD`` and ``RUN`` to give the stages and the external image uses.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from builder.errors import DockerfileError

__all__ = [
    "ImageUse",
    "Instruction",
    "ParsedDockerfile",
    "Stage",
    "parse_dockerfile",
]

_DEFAULT_ESCAPE = "\\"
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_DIRECTIVE_RE = re.compile(r"#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*")
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
# A heredoc word: optional fd digits, "<<", optional "-", then the (maybe quoted)
# delimiter, which may not contain another "<".
_HEREDOC_RE = re.compile(r"[0-9]*<<(-?)([^<]+)")
_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]*")
_STAGE_INDEX_RE = re.compile(r"[+-]?[0-9]+")
_VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]")
_SCRATCH = "scratch"
# Build arguments the builder defines in the global scope without an ARG line.
# Their values are only known here if the caller passes them in build_args.
_AUTOMATIC_ARGS = frozenset({
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
})


# --------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    """One logical line of a Dockerfile.

    ``args`` is everything after the keyword (continuation lines joined,
    surrounding whitespace removed), leading flags included. ``flags`` maps each
    leading ``--name[=value]`` flag, name lower-cased, to its value with quotes
    removed (``""`` for a bare ``--name``); when a flag is repeated the last one
    wins here and :meth:`flag_values` gives all of them.
    """

    keyword: str
    args: str
    flags: dict[str, str] = field(hash=False)
    line: int

    def flag_values(self, name: str) -> tuple[str, ...]:
        """Every value of the leading flag ``name``, in order (e.g. several ``--mount``)."""
        wanted = name.lower()
        return tuple(value for key, value in _split_flags(self.args)[0] if key == wanted)

    @property
    def body(self) -> str:
        """``args`` without the leading flags."""
        return _split_flags(self.args)[1]


@dataclass(frozen=True)
class Stage:
    index: int              # 0-based stage number
    name: str | None        # the `AS name`, lower-cased; None if absent
    base: str               # the FROM image after ARG substitution
    platform: str | None    # value of --platform= if given (after substitution)
    line: int               # 1-based line of the FROM instruction


@dataclass(frozen=True)
class ImageUse:
    ref: str                # an image that is neither a stage of this file nor "scratch"
    kind: str               # "from", "copy" (COPY/ADD --from=) or "mount" (RUN --mount=from=)
    line: int               # 1-based line of the instruction
    stage: int              # index of the stage it appears in


@dataclass(frozen=True)
class ParsedDockerfile:
    stages: tuple[Stage, ...]
    uses: tuple[ImageUse, ...]
    args: tuple[str, ...] = ()   # every ARG name declared anywhere, sorted


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------

def parse_dockerfile(text: str, path: str = "Dockerfile",
                     build_args: Mapping[str, str] | None = None) -> ParsedDockerfile:
    """Parse ``text`` into its stages and the images it uses.

    ``build_args`` override the defaults of declared ``ARG``s (undeclared names
    are ignored, as the builder does, except the automatic platform arguments
    such as ``BUILDPLATFORM``). Raises :class:`DockerfileError` for a file the
    builder would reject in a way that matters here.
    """
    lines = _physical_lines(text)
    ctx = _Context(path=path, escape=_escape_token(lines, path),
                   build_args=dict(build_args or {}))
    preamble, blocks = _split_stages(_instructions(lines, ctx.escape, path), ctx)
    if not blocks:
        raise DockerfileError("no FROM instruction", path=path,
                              hint="a Dockerfile needs at least one FROM")
    global_scope = _global_scope(preamble, ctx)
    stages = tuple(_parse_from(block[0], index, global_scope, ctx)
                   for index, block in enumerate(blocks))
    uses: list[ImageUse] = []
    for stage, block in zip(stages, blocks, strict=True):
        uses.extend(_stage_uses(stage, block, stages, global_scope, ctx))
    args = {name for instruction in preamble + [i for block in blocks for i in block]
            if instruction.keyword == "ARG"
            for name, _ in _arg_declarations(instruction, ctx)}
    return ParsedDockerfile(stages=stages, uses=tuple(uses), args=tuple(sorted(args)))


# --------------------------------------------------------------------------
# Lines, directives and instructions
# --------------------------------------------------------------------------

def _physical_lines(text: str) -> list[str]:
    """Split on LF, dropping a CR before it, a final empty line and a leading BOM."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_directives(lines: list[str], path: str) -> dict[str, tuple[str, int]]:
    """Directives by lower-cased name -> (value, line), read until the first other line."""
    found: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(lines, start=1):
        match = _DIRECTIVE_RE.fullmatch(raw.lstrip())
        if match is None:
            break
        name = match.group(1).lower()
        if name not in _KNOWN_DIRECTIVES:
            break  # an unknown directive is a comment, and comments end the directives
        if name in found:
            raise DockerfileError(f"only one {name} parser directive can be used",
                                  path=path, line=number)
        found[name] = (match.group(2), number)
    return found


def _escape_token(lines: list[str], path: str) -> str:
    value, line = _read_directives(lines, path).get("escape", (_DEFAULT_ESCAPE, None))
    if value not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token {value!r}", path=path, line=line,
                              hint="use ` or \\")
    return value


def _instructions(lines: list[str], escape: str, path: str) -> Iterator[Instruction]:
    index = 0
    while index < len(lines):
        first_line = index + 1
        logical, index = _logical_line(lines, index, escape)
        if not logical.strip():
            continue
        instruction = _make_instruction(logical, first_line)
        if instruction.keyword in _HEREDOC_KEYWORDS:
            heredocs = _heredoc_delimiters(instruction.args, escape)
            index = _skip_heredocs(lines, index, heredocs, path, first_line)
        yield instruction


def _logical_line(lines: list[str], index: int, escape: str) -> tuple[str, int]:
    """Join the instruction starting at ``lines[index]``; return it and the next index.

    Comment and blank lines give ``""``. Inside a continued instruction, comment
    lines and blank lines are dropped, as the builder does.
    """
    first = lines[index].lstrip()
    index += 1
    if not first or first.startswith("#"):
        return "", index
    part, continued = _strip_continuation(first, escape)
    parts = [part]
    while continued and index < len(lines):
        raw = lines[index]
        index += 1
        stripped = raw.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        part, continued = _strip_continuation(raw, escape)
        parts.append(part)
    return "".join(parts), index


def _strip_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a trailing escape (plus spaces/tabs after it); say whether there was one."""
    trimmed = line.rstrip(" \t")
    if trimmed.endswith(escape):
        return trimmed[:-1], True
    return line, False


def _make_instruction(logical: str, line: int) -> Instruction:
    keyword, *rest = logical.split(None, 1)
    args = rest[0].strip() if rest else ""
    flags, _ = _split_flags(args)
    return Instruction(keyword=keyword.upper(), args=args, flags=dict(flags), line=line)


def _split_flags(args: str) -> tuple[list[tuple[str, str]], str]:
    """Split the leading ``--flag[=value]`` words off ``args``.

    Returns ``[(lower-cased name, value)]`` and the rest. As in the builder,
    quotes in a flag word are removed and a backslash takes the next character
    literally; a bare ``--`` ends the flags.
    """
    flags: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(args) and args[pos].isspace():
            pos += 1
        if not args.startswith("--", pos):
            return flags, args[pos:]
        word, pos = _flag_word(args, pos)
        if word == "--":
            return flags, args[pos:].lstrip()
        name, _, value = word[2:].partition("=")
        flags.append((name.lower(), value))


def _flag_word(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    quote = ""
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if not quote and ch.isspace():
            break
        if ch == "\\":
            if pos < len(text):
                out.append(text[pos])
                pos += 1
        elif not quote and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = ""
        else:
            out.append(ch)
    return "".join(out), pos


def _split_words(text: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes in the words."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if not quote and ch.isspace():
            if current:
                words.append("".join(current))
                current = []
            pos += 1
            continue
        if ch == escape and quote != "'" and pos + 1 < len(text):
            current.append(text[pos:pos + 2])
            pos += 2
            continue
        if not quote and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = ""
        current.append(ch)
        pos += 1
    if current:
        words.append("".join(current))
    return words


def _heredoc_delimiters(args: str, escape: str) -> list[tuple[str, bool]]:
    """The heredocs opened by an instruction: ``[(delimiter, strip_tabs)]`` in order."""
    found = []
    if "<<" not in args:
        return found
    for word in _split_words(args, escape):
        match = _HEREDOC_RE.fullmatch(word)
        if match is None:
            continue
        try:
            name = _Words(match.group(2), {}, escape, variables=False).process()
        except _SubstitutionError:
            continue
        if name:
            found.append((name, match.group(1) == "-"))
    return found


def _skip_heredocs(lines: list[str], index: int, heredocs: list[tuple[str, bool]],
                   path: str, line: int) -> int:
    """Skip the bodies of ``heredocs``, which follow the instruction one after another."""
    for delimiter, strip_tabs in heredocs:
        while True:
            if index >= len(lines):
                raise DockerfileError(f"unterminated heredoc: no line {delimiter!r} follows",
                                      path=path, line=line)
            candidate = lines[index]
            index += 1
            if strip_tabs:
                candidate = candidate.lstrip("\t")
            if candidate == delimiter:
                break
    return index


# --------------------------------------------------------------------------
# Word processing: quotes, escapes, $VAR and ${VAR...}
# --------------------------------------------------------------------------

class _SubstitutionError(ValueError):
    pass


class _Words:
    """Process one word the way the builder does for FROM, ARG values and flags.

    Single quotes are literal, double quotes allow substitution, the escape
    character makes the next character literal. Unset variables give ``""``.
    Supported forms: ``$V ${V} ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?w} ${V?w}
    ${V#p} ${V##p} ${V%p} ${V%%p}``.
    """

    def __init__(self, text: str, scope: Mapping[str, str], escape: str,
                 *, variables: bool = True) -> None:
        self._text = text
        self._pos = 0
        self._scope = scope
        self._escape = escape
        self._variables = variables

    def process(self) -> str:
        return self._until("")

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _next(self, wanted: str) -> str:
        if self._pos >= len(self._text):
            raise _SubstitutionError(f"missing {wanted}")
        ch = self._text[self._pos]
        self._pos += 1
        return ch

    def _until(self, stop: str) -> str:
        """Process up to and including ``stop`` (or to the end if ``stop`` is empty)."""
        out: list[str] = []
        while self._pos < len(self._text):
            ch = self._text[self._pos]
            self._pos += 1
            if ch == stop:
                return "".join(out)
            out.append(self._unquoted(ch))
        if stop:
            raise _SubstitutionError(f"missing {stop!r}")
        return "".join(out)

    def _unquoted(self, ch: str) -> str:
        if ch == "'":
            return self._single_quoted()
        if ch == '"':
            return self._double_quoted()
        if ch == "$" and self._variables:
            return self._dollar()
        if ch == self._escape:
            return self._next("character after escape") if self._peek() else ""
        return ch

    def _single_quoted(self) -> str:
        end = self._text.find("'", self._pos)
        if end < 0:
            raise _SubstitutionError("missing closing single quote")
        value = self._text[self._pos:end]
        self._pos = end + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while True:
            ch = self._next("closing double quote")
            if ch == '"':
                return "".join(out)
            if ch == "$" and self._variables:
                out.append(self._dollar())
            elif ch == self._escape and self._peek() in ('"', "$", self._escape):
                out.append(self._next("escaped character"))
            else:
                out.append(ch)

    def _name(self) -> str:
        match = _VARIABLE_NAME_RE.match(self._text, self._pos)
        if match is None:
            return ""
        self._pos = match.end()
        return match.group()

    def _dollar(self) -> str:
        if self._peek() == "{":
            self._pos += 1
            return self._braced()
        name = self._name()
        return self._scope.get(name, "") if name else "$"

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise _SubstitutionError("bad substitution: no variable name after '${'")
        op = self._next("'}'")
        if op == "}":
            return self._scope.get(name, "")
        colon = op == ":"
        if colon:
            op = self._next("'}'")
        if op in ("-", "+", "?"):
            return self._conditional(name, op, colon)
        if not colon and op in ("#", "%"):
            longest = self._peek() == op
            if longest:
                self._pos += 1
            pattern = self._until("}")
            return _remove_affix(self._scope.get(name, ""), pattern, op == "#", longest)
        modifier = ":" + op if colon else op
        raise _SubstitutionError(f"unsupported modifier {modifier!r} in ${{{name}...}}")

    def _conditional(self, name: str, op: str, colon: bool) -> str:
        word = self._until("}")
        value = self._scope.get(name)
        missing = value is None or (colon and value == "")
        if op == "-":
            return word if missing else value
        if op == "+":
            return "" if missing else word
        if missing:
            raise _SubstitutionError(f"{name}: {word or 'is not set'}")
        return value


def _remove_affix(value: str, pattern: str, prefix: bool, longest: bool) -> str:
    """``${V#p}`` (prefix) / ``${V%p}`` (suffix), shortest match or longest match."""
    sizes = range(len(value), -1, -1) if longest else range(len(value) + 1)
    for size in sizes:
        if prefix and fnmatch.fnmatchcase(value[:size], pattern):
            return value[size:]
        if not prefix and fnmatch.fnmatchcase(value[len(value) - size:], pattern):
            return value[:len(value) - size]
    return value


# --------------------------------------------------------------------------
# Stages, arguments and image uses
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Context:
    path: str
    escape: str
    build_args: Mapping[str, str]

    def error(self, message: str, line: int, hint: str | None = None) -> DockerfileError:
        return DockerfileError(message, path=self.path, line=line, hint=hint)

    def substitute(self, word: str, scope: Mapping[str, str], line: int) -> str:
        try:
            return _Words(word, scope, self.escape).process()
        except _SubstitutionError as exc:
            raise self.error(f"cannot expand {word!r}: {exc}", line) from None


def _split_stages(instructions: Iterable[Instruction], ctx: _Context
                  ) -> tuple[list[Instruction], list[list[Instruction]]]:
    """The ARGs before the first FROM, and each stage's instructions (FROM first)."""
    preamble: list[Instruction] = []
    blocks: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            blocks.append([instruction])
        elif blocks:
            blocks[-1].append(instruction)
        elif instruction.keyword == "ARG":
            preamble.append(instruction)
        else:
            raise ctx.error(f"{instruction.keyword} before the first FROM", instruction.line,
                            hint="only ARG may come before the first FROM")
    return preamble, blocks


def _arg_declarations(instruction: Instruction, ctx: _Context) -> list[tuple[str, str | None]]:
    """``ARG A B=1 C="x y"`` -> ``[("A", None), ("B", "1"), ("C", '"x y"')]``."""
    words = _split_words(instruction.args, ctx.escape)
    if not words:
        raise ctx.error("ARG requires at least one argument", instruction.line)
    declarations: list[tuple[str, str | None]] = []
    for word in words:
        name, equals, default = word.partition("=")
        if not name:
            raise ctx.error(f"ARG {word!r} has no name", instruction.line)
        declarations.append((name, default if equals else None))
    return declarations


def _declare(instruction: Instruction, scope: dict[str, str], ctx: _Context,
             inherited: Mapping[str, str]) -> None:
    """Apply an ARG line to ``scope``: build arg, else default, else ``inherited`` value."""
    for name, default in _arg_declarations(instruction, ctx):
        if name in ctx.build_args:
            scope[name] = ctx.build_args[name]
        elif default is not None:
            scope[name] = ctx.substitute(default, scope, instruction.line)
        elif name in inherited:
            scope[name] = inherited[name]


def _global_scope(preamble: list[Instruction], ctx: _Context) -> dict[str, str]:
    """The arguments usable in FROM lines: those declared before the first FROM."""
    scope = {name: value for name, value in ctx.build_args.items() if name in _AUTOMATIC_ARGS}
    for instruction in preamble:
        _declare(instruction, scope, ctx, inherited={})
    return scope


def _parse_from(instruction: Instruction, index: int, scope: Mapping[str, str],
                ctx: _Context) -> Stage:
    words = instruction.body.split()
    if not words:
        raise ctx.error("FROM requires an image", instruction.line)
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise ctx.error(f"cannot parse 'FROM {instruction.body}'", instruction.line,
                        hint="expected FROM [--platform=...] image [AS name]")
    name = words[2].lower() if len(words) == 3 else None
    if name is not None and not _STAGE_NAME_RE.fullmatch(name):
        raise ctx.error(f"invalid stage name {words[2]!r}", instruction.line,
                        hint="a stage name starts with a letter and contains only "
                             "letters, digits, '-', '_' and '.'")
    base = ctx.substitute(words[0], scope, instruction.line)
    if not base:
        raise ctx.error(f"FROM image {words[0]!r} expands to an empty string",
                        instruction.line)
    platform = instruction.flags.get("platform")
    if platform is not None:
        platform = ctx.substitute(platform, scope, instruction.line)
    return Stage(index=index, name=name, base=base, platform=platform,
                 line=instruction.line)


def _stages_named(name: str, stages: Iterable[Stage]) -> list[Stage]:
    wanted = name.lower()
    return [stage for stage in stages if stage.name == wanted]


def _stage_uses(stage: Stage, block: list[Instruction], stages: tuple[Stage, ...],
                global_scope: Mapping[str, str], ctx: _Context) -> Iterator[ImageUse]:
    if stage.base.lower() != _SCRATCH and not _stages_named(stage.base, stages[:stage.index]):
        yield ImageUse(ref=stage.base, kind="from", line=stage.line, stage=stage.index)
    scope = dict(global_scope)
    for instruction in block[1:]:
        if instruction.keyword == "ARG":
            _declare(instruction, scope, ctx, inherited=global_scope)
        for kind, raw in _sources(instruction, ctx):
            value = ctx.substitute(raw, scope, instruction.line)
            if value and _is_image(value, stage, stages, instruction, ctx):
                yield ImageUse(ref=value, kind=kind, line=instruction.line, stage=stage.index)


def _sources(instruction: Instruction, ctx: _Context) -> list[tuple[str, str]]:
    """``[(kind, unexpanded source)]`` named by a COPY/ADD --from or RUN --mount."""
    if instruction.keyword in ("COPY", "ADD"):
        source = instruction.flags.get("from", "")
        return [("copy", source)] if source else []
    if instruction.keyword == "RUN":
        sources = (_mount_source(spec, instruction, ctx)
                   for spec in instruction.flag_values("mount"))
        return [("mount", source) for source in sources if source]
    return []


def _mount_source(spec: str, instruction: Instruction, ctx: _Context) -> str:
    """The ``from=`` field of a ``--mount`` value (comma-separated key=value fields)."""
    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as exc:
        raise ctx.error(f"cannot parse --mount={spec}: {exc}", instruction.line) from None
    source = ""
    for item in fields:
        key, equals, value = item.partition("=")
        if equals and key.strip().lower() == "from":
            source = value
    return source


def _is_image(value: str, stage: Stage, stages: tuple[Stage, ...],
              instruction: Instruction, ctx: _Context) -> bool:
    """Whether a --from / from= value is an image (not a stage or scratch)."""
    if _STAGE_INDEX_RE.fullmatch(value):
        _check_stage_index(int(value), stage, stages, instruction, ctx)
        return False
    if value.lower() == _SCRATCH:
        return False
    named = _stages_named(value, stages)
    if not named:
        return True
    if named[0].index < stage.index:
        return False
    if named[0].index == stage.index:
        raise ctx.error(f"stage {named[0].name!r} cannot use itself", instruction.line)
    raise ctx.error(f"stage {named[0].name!r} is used before it is defined", instruction.line,
                    hint=f"it is stage {named[0].index}; stage {stage.index} can only use "
                         "earlier stages")


def _check_stage_index(number: int, stage: Stage, stages: tuple[Stage, ...],
                       instruction: Instruction, ctx: _Context) -> None:
    if not 0 <= number < len(stages):
        raise ctx.error(f"invalid stage index {number}", instruction.line,
                        hint=f"the Dockerfile has stages 0 to {len(stages) - 1}")
    if number >= stage.index:
        raise ctx.error(f"stage index {number} is not an earlier stage", instruction.line,
                        hint=f"stage {stage.index} can only use stages 0 to {stage.index - 1}"
                        if stage.index else "stage 0 cannot use other stages")
