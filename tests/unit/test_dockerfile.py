"""Tests for builder.graph.dockerfile: the Dockerfile reader behind the image graph."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from builder.errors import DockerfileError
from builder.graph import dockerfile
from builder.graph.dockerfile import (
    ImageUse,
    Instruction,
    ParsedDockerfile,
    Stage,
    parse_dockerfile,
)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def iter_instructions(text: str, path: str = "Dockerfile") -> list[Instruction]:
    """The instructions ``parse_dockerfile`` reads from ``text`` (its first step), in order.

    The reader's own steps, as ``parse_dockerfile`` calls them: the line
    handling (continuations, comments, heredocs, directives) is tested here
    on its own, the interpretation through ``parse_dockerfile``.
    """
    lines = dockerfile._physical_lines(text)
    return list(dockerfile._instructions(lines, dockerfile._escape_token(lines, path), path))


def instructions(text: str) -> list[Instruction]:
    return iter_instructions(dedent(text))


def summary(text: str) -> list[tuple[str, str, int]]:
    return [(i.keyword, i.args, i.line) for i in instructions(text)]


def parse(text: str, **build_args: str) -> ParsedDockerfile:
    return parse_dockerfile(dedent(text), path="img/Dockerfile", build_args=build_args)


def bases(text: str, **build_args: str) -> list[str]:
    return [stage.base for stage in parse(text, **build_args).stages]


def refs(text: str, **build_args: str) -> list[tuple[str, str, int]]:
    return [(use.ref, use.kind, use.line) for use in parse(text, **build_args).uses]


def parse_error(text: str, **build_args: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse(text, **build_args)
    assert info.value.path == "img/Dockerfile"
    return info.value


# --------------------------------------------------------------------------
# Instructions: comments, blank lines, keywords, line numbers
# --------------------------------------------------------------------------

class TestInstructions:
    def test_keywords_upper_cased_and_lines_counted(self):
        text = """
            # leading comment

            from alpine:3.19
              Run  echo hi
            #  another comment
            LABEL a=b   \t
            """
        assert summary(text) == [
            ("FROM", "alpine:3.19", 3),
            ("RUN", "echo hi", 4),
            ("LABEL", "a=b", 6),
        ]

    def test_keyword_separated_by_tab(self):
        assert summary("RUN\techo tab\n") == [("RUN", "echo tab", 1)]

    def test_instruction_without_arguments(self):
        assert summary("FROM a\nHEALTHCHECK\n") == [("FROM", "a", 1), ("HEALTHCHECK", "", 2)]

    def test_inline_hash_is_not_a_comment(self):
        assert summary("RUN echo '#not a comment' # nor this\n") == [
            ("RUN", "echo '#not a comment' # nor this", 1)]

    def test_unknown_instructions_are_yielded(self):
        assert summary("FROM a\nFROBNICATE x y\n") == [("FROM", "a", 1), ("FROBNICATE", "x y", 2)]

    def test_empty_and_comment_only_text(self):
        assert instructions("") == []
        assert instructions("# just a comment\n\n   \n") == []

    def test_windows_line_endings_and_no_final_newline(self):
        text = "ARG X=1\r\nFROM alpine \\\r\n  AS base\r\nRUN a \\\r\n\r\n  b"
        assert [(i.keyword, i.args, i.line) for i in iter_instructions(text)] == [
            ("ARG", "X=1", 1),
            ("FROM", "alpine   AS base", 2),
            ("RUN", "a   b", 4),
        ]

    def test_byte_order_mark_is_ignored(self):
        text = "\ufeff# escape=`\nFROM a `\n  AS b\n"
        assert [(i.keyword, i.args) for i in iter_instructions(text)] == [("FROM", "a   AS b")]

    def test_instruction_is_hashable_and_frozen(self):
        (ins,) = instructions("COPY --from=a x y\n")
        assert hash(ins) == hash(Instruction("COPY", "--from=a x y", {"from": "a"}, 1))
        with pytest.raises(AttributeError):
            ins.line = 3  # type: ignore[misc]


# --------------------------------------------------------------------------
# Line continuations
# --------------------------------------------------------------------------

class TestContinuations:
    def test_lines_are_joined_and_first_line_reported(self):
        text = """
            FROM alpine
            RUN apk add \\
                curl \\
                git
            CMD ["sh"]
            """
        assert summary(text) == [
            ("FROM", "alpine", 1),
            ("RUN", "apk add     curl     git", 2),
            ("CMD", '["sh"]', 5),
        ]

    def test_whitespace_after_escape_still_continues(self):
        assert summary("RUN a \\  \t\n  b\n") == [("RUN", "a   b", 1)]

    def test_comments_and_blank_lines_inside_continuation_are_skipped(self):
        text = """
            RUN one \\
            # a comment in the middle \\

                  # an indented comment
                two \\

                three
            ENV X=1
            """
        assert summary(text) == [("RUN", "one     two     three", 1), ("ENV", "X=1", 8)]

    def test_continuation_inside_a_word(self):
        assert summary("FROM alp\\\nine:3\\\n.19\n") == [("FROM", "alpine:3.19", 1)]

    def test_continuation_at_end_of_file(self):
        assert summary("FROM a\nRUN x \\\n") == [("FROM", "a", 1), ("RUN", "x", 2)]

    def test_comment_ending_in_escape_does_not_continue(self):
        assert summary("# comment \\\nFROM a\n") == [("FROM", "a", 2)]


# --------------------------------------------------------------------------
# Parser directives
# --------------------------------------------------------------------------

class TestDirectives:
    def test_backtick_escape(self):
        text = """
            # escape=`
            FROM mcr.microsoft.com/windows/servercore:ltsc2022
            COPY app C:\\app\\
            RUN Write-Host a `
                b
            """
        assert summary(text) == [
            ("FROM", "mcr.microsoft.com/windows/servercore:ltsc2022", 2),
            ("COPY", "app C:\\app\\", 3),
            ("RUN", "Write-Host a     b", 4),
        ]

    def test_directive_spelling_is_flexible(self):
        text = "#\t  EsCaPe =  `  \nRUN a `\nb\n"
        assert summary(text) == [("RUN", "a b", 2)]

    def test_several_directives(self):
        # syntax and check are directives too: after them, escape still counts
        text = "# syntax=docker/dockerfile:1.7\n# check=skip=all\n# escape=`\nRUN a `\nb\n"
        assert summary(text) == [("RUN", "a b", 4)]

    @pytest.mark.parametrize("before", [
        "# a plain comment\n",
        "\n",
        "# unknown=directive\n",
        "FROM x\n",
    ])
    def test_directive_only_counts_at_the_very_top(self, before):
        text = before + "# escape=`\nRUN a `\nRUN b \\\nc\n"
        assert [(i.keyword, i.args) for i in iter_instructions(text)][-2:] == [
            ("RUN", "a `"), ("RUN", "b c")]

    def test_duplicate_directive_is_an_error(self):
        with pytest.raises(DockerfileError) as info:
            iter_instructions("# escape=`\n# ESCAPE=`\nFROM a\n", "x/Dockerfile")
        assert "only one escape" in info.value.message
        assert (info.value.path, info.value.line) == ("x/Dockerfile", 2)

    def test_invalid_escape_token_is_an_error(self):
        with pytest.raises(DockerfileError) as info:
            parse_dockerfile("# syntax=x\n# escape=|\nFROM a\n", path="p")
        assert "invalid escape token '|'" in str(info.value)
        assert info.value.line == 2

    def test_directives_are_not_instructions(self):
        assert instructions("# syntax=docker/dockerfile:1\nFROM a\n")[0].line == 2


# --------------------------------------------------------------------------
# Heredocs
# --------------------------------------------------------------------------

class TestHeredocs:
    def test_body_is_skipped(self):
        text = """
            FROM alpine
            RUN <<EOF
            FROM evil:latest
            COPY --from=evil / /
            # escape=`
            EOF
            COPY x /x
            """
        assert summary(text) == [("FROM", "alpine", 1), ("RUN", "<<EOF", 2), ("COPY", "x /x", 7)]

    def test_strip_tabs_form(self):
        text = "RUN <<-END\n\techo FROM\n\t\tEND\nUSER app\n"
        assert summary(text) == [("RUN", "<<-END", 1), ("USER", "app", 4)]

    def test_plain_form_needs_exact_terminator(self):
        text = "RUN <<END\n\tEND\n END\nEND\nUSER app\n"
        assert summary(text)[-1] == ("USER", "app", 5)

    @pytest.mark.parametrize("opener", ['<<"EOT"', "<<'EOT'", '<<-"EOT"', "<<E'O'T"])
    def test_quoted_delimiters(self, opener):
        text = f"COPY {opener} /etc/motd\nhello $USER\nEOT\nUSER app\n"
        assert summary(text)[-1] == ("USER", "app", 4)

    def test_several_heredocs_on_one_line(self):
        text = """
            COPY <<A <<B /dest/
            FROM a-body
            A
            FROM b-body
            B
            RUN cat <<one > /x && cat <<'two' > /y
            1
            one
            2
            two
            LABEL done=yes
            """
        assert summary(text) == [
            ("COPY", "<<A <<B /dest/", 1),
            ("RUN", "cat <<one > /x && cat <<'two' > /y", 6),
            ("LABEL", "done=yes", 11),
        ]

    def test_heredoc_after_flags_and_continuation(self):
        text = "RUN --mount=type=cache,target=/c \\\n    <<EOF\nFROM x\nEOF\nUSER u\n"
        assert summary(text) == [
            ("RUN", "--mount=type=cache,target=/c     <<EOF", 1), ("USER", "u", 5)]

    @pytest.mark.parametrize("line", [
        'RUN echo "<<EOF"',
        "RUN echo '<<EOF'",
        "RUN cat <<<EOF",
        "RUN echo a<<EOF",
        "LABEL x=<<EOF",
        "CMD cat <<EOF",
        "ONBUILD RUN <<EOF",
    ])
    def test_not_heredocs(self, line):
        text = f"{line}\nUSER u\nEOF\n"
        assert [i.keyword for i in instructions(text)] == [line.split()[0], "USER", "EOF"]

    def test_unterminated_heredoc(self):
        with pytest.raises(DockerfileError) as info:
            iter_instructions("FROM a\nRUN <<EOF\necho hi\n", "d/Dockerfile")
        assert "unterminated heredoc" in info.value.message
        assert "EOF" in info.value.message
        assert (info.value.path, info.value.line) == ("d/Dockerfile", 2)


# --------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------

class TestFlags:
    def test_leading_flags(self):
        (ins,) = instructions("COPY --from=builder --chown=1000:1000 --link /src /dst\n")
        assert ins.flags == {"from": "builder", "chown": "1000:1000", "link": ""}
        assert ins.args == "--from=builder --chown=1000:1000 --link /src /dst"
        assert ins.body == "/src /dst"

    def test_flag_names_are_case_insensitive_and_values_unquoted(self):
        (ins,) = instructions('copy --FROM="my image" --Chmod=\'755\' a b\n')
        assert ins.keyword == "COPY"
        assert ins.flags == {"from": "my image", "chmod": "755"}
        assert ins.body == "a b"

    def test_flags_stop_at_first_other_word(self):
        (ins,) = instructions("RUN echo --not-a-flag=1\n")
        assert ins.flags == {}
        assert ins.body == "echo --not-a-flag=1"

    def test_double_dash_ends_flags(self):
        (ins,) = instructions("COPY --link -- --odd-name /dst\n")
        assert ins.flags == {"link": ""}
        assert ins.body == "--odd-name /dst"

    def test_repeated_flags(self):
        (ins,) = instructions("RUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b x\n")
        assert ins.flags == {"mount": "type=tmpfs,target=/b"}
        assert ins.flag_values("MOUNT") == ("type=cache,target=/a", "type=tmpfs,target=/b")
        assert ins.flag_values("network") == ()


# --------------------------------------------------------------------------
# Stages and FROM
# --------------------------------------------------------------------------

class TestStages:
    def test_single_stage(self):
        parsed = parse("FROM python:3.12-slim\nRUN pip install x\n")
        assert parsed.stages == (Stage(0, None, "python:3.12-slim", None, 1),)
        assert parsed.uses == (ImageUse("python:3.12-slim", "from", 1, 0),)

    def test_scratch_is_not_a_use(self):
        parsed = parse("FROM scratch\nCOPY --from=scratch / /\nCOPY app /\n")
        assert parsed.stages[0].base == "scratch"
        assert parsed.uses == ()

    def test_stage_names_and_references_are_case_insensitive(self):
        parsed = parse("""
            FROM golang:1.22 As Builder
            FROM BUILDER aS Tester
            FROM debian:12
            """)
        assert [(s.index, s.name, s.base, s.line) for s in parsed.stages] == [
            (0, "builder", "golang:1.22", 1),
            (1, "tester", "BUILDER", 2),
            (2, None, "debian:12", 3),
        ]
        assert [use.ref for use in parsed.uses] == ["golang:1.22", "debian:12"]

    def test_from_can_only_name_an_earlier_stage(self):
        # Like the builder: "later" is not a stage yet when FROM is read, so it is an image.
        parsed = parse("FROM later AS first\nFROM alpine AS later\nFROM first\n")
        assert [use.ref for use in parsed.uses] == ["later", "alpine"]

    def test_stage_naming_itself_is_an_image(self):
        assert refs("FROM node AS node\n") == [("node", "from", 1)]

    def test_platform(self):
        parsed = parse("FROM --platform=linux/arm64 alpine AS a\nFROM alpine\n")
        assert [s.platform for s in parsed.stages] == ["linux/arm64", None]

    def test_from_without_image(self):
        err = parse_error("ARG X\n\nFROM\nRUN x\n")
        assert "FROM requires an image" in err.message
        assert err.line == 3
        assert str(err).startswith("img/Dockerfile:3: ")

    def test_from_with_only_flags(self):
        err = parse_error("FROM --platform=linux/amd64\n")
        assert "FROM requires an image" in err.message
        assert err.line == 1

    @pytest.mark.parametrize("line", ["FROM a b", "FROM a AS", "FROM a as b c", "FROM a to b"])
    def test_from_with_wrong_arguments(self, line):
        err = parse_error(f"FROM ok\n{line}\n")
        assert "cannot parse" in err.message
        assert err.line == 2

    @pytest.mark.parametrize("name", ["1st", "my$stage", "a/b", "-x"])
    def test_invalid_stage_name(self, name):
        err = parse_error(f"FROM alpine AS {name}\n")
        assert f"invalid stage name {name!r}" in err.message
        assert err.line == 1

    def test_no_from_at_all(self):
        for text in ("", "# only a comment\n", "ARG A=1\nARG B\n"):
            with pytest.raises(DockerfileError) as info:
                parse_dockerfile(text, path="empty/Dockerfile")
            assert "no FROM instruction" in info.value.message
            assert info.value.path == "empty/Dockerfile"
            assert info.value.line is None

    @pytest.mark.parametrize("keyword", ["RUN true", "ENV A=1", "LABEL a=b", "ONBUILD RUN x"])
    def test_only_arg_may_precede_from(self, keyword):
        err = parse_error(f"ARG BASE=alpine\n{keyword}\nFROM $BASE\n")
        assert keyword.split()[0] in err.message
        assert "before the first FROM" in err.message
        assert err.line == 2

    def test_base_expanding_to_nothing(self):
        err = parse_error("ARG IMAGE\nFROM ${IMAGE}\n")
        assert "expands to an empty string" in err.message
        assert err.line == 2


# --------------------------------------------------------------------------
# ARG and substitution in FROM
# --------------------------------------------------------------------------

class TestSubstitution:
    def test_simple_forms(self):
        text = """
            ARG REGISTRY=registry.example.com
            ARG NAME=base
            ARG TAG=1.0
            FROM $REGISTRY/$NAME:${TAG}
            FROM ${REGISTRY}/kiln/${NAME}-dev:${TAG}
            """
        assert bases(text) == ["registry.example.com/base:1.0",
                               "registry.example.com/kiln/base-dev:1.0"]

    def test_build_args_override_defaults(self):
        text = "ARG TAG=1.0\nARG FLAVOUR\nFROM base:${TAG}${FLAVOUR}\n"
        assert bases(text) == ["base:1.0"]
        assert bases(text, TAG="2.0", FLAVOUR="-slim") == ["base:2.0-slim"]

    def test_build_args_for_undeclared_names_are_ignored(self):
        assert bases("FROM base:${TAG}x\n", TAG="2.0") == ["base:x"]

    def test_undeclared_variable_is_empty(self):
        assert bases("FROM alpine$SUFFIX${OTHER}\n") == ["alpine"]

    def test_several_args_on_one_line_and_quotes(self):
        text = """
            ARG A=one B="two words" C='$A'
            ARG D="${A}-$B"
            FROM "$D:$C"
            """
        assert bases(text) == ["one-two words:$A"]
        assert bases(text, B="b") == ["one-b:$A"]

    def test_pattern_replacement_is_not_supported(self):
        err = parse_error("ARG B=a.b\nFROM x:${B/./-}\n")
        assert "unsupported modifier '/'" in err.message
        assert err.line == 2

    def test_defaults_refer_to_earlier_args(self):
        text = "ARG OS=debian\nARG VER=12\nARG IMAGE=${OS}:${VER}-slim\nFROM ${IMAGE}\n"
        assert bases(text) == ["debian:12-slim"]
        assert bases(text, VER="11") == ["debian:11-slim"]
        assert bases(text, IMAGE="ubuntu") == ["ubuntu"]

    @pytest.mark.parametrize(("expr", "unset", "empty", "full"), [
        ("${V:-d}", "d", "d", "val"),
        ("${V-d}", "d", "", "val"),
        ("${V:+alt}", "", "", "alt"),
        ("${V+alt}", "", "alt", "alt"),
    ])
    def test_default_and_alternative(self, expr, unset, empty, full):
        declared_no_default = f"ARG V\nFROM x{expr}\n"
        declared_empty = f"ARG V=\nFROM x{expr}\n"
        declared_full = f"ARG V=val\nFROM x{expr}\n"
        assert bases(declared_no_default) == ["x" + unset]
        assert bases(declared_empty) == ["x" + empty]
        assert bases(declared_full) == ["x" + full]
        assert bases(declared_no_default, V="") == ["x" + empty]

    def test_nested_defaults(self):
        assert bases("ARG B=inner\nFROM ${A:-${B:-x}}:1\n") == ["inner:1"]
        assert bases("FROM ${A:-${B:-x}}:1\n") == ["x:1"]

    def test_required_variable(self):
        assert bases("ARG V=v\nFROM ${V:?set_V_please}\n") == ["v"]
        err = parse_error("ARG V=\nFROM ${V:?set_V_please}\n")
        assert "V: set_V_please" in err.message
        assert err.line == 2
        assert "V: is not set" in parse_error("FROM x${V?}\n").message
        assert bases("ARG V=\nFROM x${V?set_V_please}\n") == ["x"]

    def test_prefix_and_suffix_removal(self):
        text = "ARG V=registry.example.com/team/app:1.2.3\nFROM x/${EXPR}\n"
        cases = {
            "${V#*/}": "team/app:1.2.3",
            "${V##*/}": "app:1.2.3",
            "${V%.*}": "registry.example.com/team/app:1.2",
            "${V%%.*}": "registry",
            "${V#nomatch}": "registry.example.com/team/app:1.2.3",
        }
        for expr, expected in cases.items():
            assert bases(text.replace("${EXPR}", expr)) == ["x/" + expected], expr

    def test_escaped_dollar_is_literal(self):
        assert bases("ARG A=a\nFROM x\\$A:$A\n") == ["x$A:a"]
        assert bases('ARG A=a\nFROM "x\\$A"\n') == ["x$A"]
        assert bases("# escape=`\nARG A=a\nFROM x`$A:$A\n") == ["x$A:a"]

    def test_lone_dollar_is_literal(self):
        assert bases("FROM x$:1\n") == ["x$:1"]

    def test_single_quotes_prevent_substitution(self):
        assert bases("ARG A=a\nFROM 'x$A'\n") == ["x$A"]

    def test_stage_args_are_not_visible_in_from(self):
        text = """
            ARG TAG=1
            FROM base:$TAG AS one
            ARG TAG=2
            ARG OTHER=zzz
            FROM base:${TAG}${OTHER}
            """
        assert bases(text) == ["base:1", "base:1"]

    def test_platform_is_substituted(self):
        text = ("ARG ARCH=arm64\n"
                "FROM --platform=linux/${ARCH} alpine\n"
                "FROM --platform=$BUILDPLATFORM x\n")
        assert [s.platform for s in parse(text).stages] == ["linux/arm64", ""]
        parsed = parse(text, BUILDPLATFORM="linux/amd64", ARCH="riscv64")
        assert [s.platform for s in parsed.stages] == ["linux/riscv64", "linux/amd64"]

    @pytest.mark.parametrize(("expr", "message"), [
        ("${A", "missing '}'"),
        ("${}", "bad substitution"),
        ("${A:0:2}", "unsupported modifier"),
        ('"abc', "closing double quote"),
        ("'abc", "closing single quote"),
    ])
    def test_bad_substitutions(self, expr, message):
        err = parse_error(f"ARG A=abc\nFROM x{expr}\n")
        assert message in err.message
        assert err.line == 2

    def test_arg_without_name(self):
        err = parse_error("ARG =1\nFROM x\n")
        assert "has no name" in err.message
        assert err.line == 1
        err = parse_error("ARG\nFROM x\n")
        assert "at least one argument" in err.message


# --------------------------------------------------------------------------
# COPY --from, ADD --from, RUN --mount from=
# --------------------------------------------------------------------------

class TestSourceReferences:
    def test_copy_from_stage_index_and_image(self):
        text = """
            FROM golang:1.22 AS build
            FROM alpine:3.19
            COPY --from=build /out/app /usr/bin/app
            COPY --chown=0:0 --from=0 --link /etc/x /etc/x
            COPY --from=BUILD /a /b
            COPY --from=docker.io/tonistiigi/xx:1.4 / /
            ADD --from=registry.example.com/assets:2 --chmod=644 /data /data
            COPY plain /plain
            """
        assert refs(text) == [
            ("golang:1.22", "from", 1),
            ("alpine:3.19", "from", 2),
            ("docker.io/tonistiigi/xx:1.4", "copy", 6),
            ("registry.example.com/assets:2", "copy", 7),
        ]
        assert {use.stage for use in parse(text).uses[2:]} == {1}

    def test_empty_from_copies_from_the_context(self):
        assert refs("FROM a\nCOPY --from= x y\nCOPY --from x y\n") == [("a", "from", 1)]

    def test_mounts(self):
        text = r"""
            FROM python:3.12 AS wheels
            FROM python:3.12-slim
            RUN --mount=type=bind,from=wheels,source=/w,target=/w \
                --mount=target=/root/.cache,type=cache,id=pip \
                --mount=from=ghcr.io/org/tools:1,type=bind,target=/t \
                --mount=type=cache,target=/var/cache,from=0 \
                --mount=type=cache,target=/s,FROM=docker.io/library/busybox,source=/ \
                --mount=type=secret,id=token \
                pip install /w/*.whl
            RUN --mount=type=bind,target=/x,"from=quoted/image:1" true
            RUN echo --mount=type=bind,from=not/a/flag
            """
        assert refs(text) == [
            ("python:3.12", "from", 1),
            ("python:3.12-slim", "from", 2),
            ("ghcr.io/org/tools:1", "mount", 3),
            ("docker.io/library/busybox", "mount", 3),
            ("quoted/image:1", "mount", 10),
        ]

    def test_from_values_are_substituted(self):
        text = """
            ARG TOOLS=ghcr.io/org/tools
            ARG TOOLS_TAG=1
            FROM alpine AS base
            FROM base AS app
            ARG STAGE=BASE
            ARG TOOLS_TAG=2
            COPY --from=${TOOLS}:${TOOLS_TAG} /bin/t /bin/t
            COPY --from=$STAGE /etc /etc
            RUN --mount=type=bind,from=${TOOLS}:${TOOLS_TAG}-mnt,target=/m true
            FROM alpine
            COPY --from=${TOOLS}:${TOOLS_TAG} /bin/t /bin/t
            """
        assert refs(text) == [
            ("alpine", "from", 3),
            ("ghcr.io/org/tools:2", "copy", 7),
            ("ghcr.io/org/tools:2-mnt", "mount", 9),
            ("alpine", "from", 10),
            ("ghcr.io/org/tools:1", "copy", 11),
        ]
        overridden = refs(text, TOOLS_TAG="9", STAGE="docker.io/other/img")
        assert [ref for ref, kind, _ in overridden if kind != "from"] == [
            "ghcr.io/org/tools:9", "docker.io/other/img", "ghcr.io/org/tools:9-mnt",
            "ghcr.io/org/tools:9"]

    def test_stage_arg_without_default_takes_global_value(self):
        text = "ARG IMG=global/img\nFROM a\nARG IMG=local/img\nARG IMG\nCOPY --from=$IMG / /\n"
        assert refs(text)[-1] == ("global/img", "copy", 5)

    def test_duplicates_are_kept_in_uses(self):
        parsed = parse("""
            FROM base:1 AS a
            FROM base:1 AS b
            COPY --from=tools:1 / /
            COPY --from=tools:1 / /
            RUN --mount=from=base:1,target=/b true
            """)
        assert [use.ref for use in parsed.uses] == [
            "base:1", "base:1", "tools:1", "tools:1", "base:1"]

    @pytest.mark.parametrize("source", ["5", "2", "-1"])
    def test_index_that_does_not_exist(self, source):
        err = parse_error(f"FROM a\nFROM b\nCOPY --from={source} / /\n")
        assert f"invalid stage index {int(source)}" in err.message
        assert err.line == 3

    @pytest.mark.parametrize("source", ["1", "2", "+1"])
    def test_index_must_be_earlier(self, source):
        err = parse_error(f"FROM a\nFROM b\nRUN --mount=from={source},target=/x true\nFROM c\n")
        assert "is not an earlier stage" in err.message
        assert err.line == 3

    def test_stage_cannot_use_itself(self):
        err = parse_error("FROM a AS one\nCOPY --from=One / /\n")
        assert "stage 'one' cannot use itself" in err.message
        assert err.line == 2

    def test_stage_name_used_before_its_definition(self):
        err = parse_error("FROM a\nCOPY --from=later / /\nFROM b AS later\n")
        assert "stage 'later' is used before it is defined" in err.message
        assert err.line == 2

    def test_copy_and_mount_ignored_outside_their_instructions(self):
        text = ("FROM a\nONBUILD COPY --from=x / /\nLABEL --from=y\n"
                "COPY <<EOF /f\nCOPY --from=z / /\nEOF\n")
        assert [use.ref for use in parse(text).uses] == ["a"]


# --------------------------------------------------------------------------
# Realistic Dockerfiles
# --------------------------------------------------------------------------

GO_SERVICE = r"""
# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.22
ARG REGISTRY=registry.example.com/kiln
ARG BASE_TAG=2024.06

FROM --platform=$BUILDPLATFORM tonistiigi/xx:1.4 AS xx

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
COPY --from=xx / /
ARG TARGETPLATFORM
WORKDIR /src
RUN --mount=type=bind,target=. \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/go/pkg/mod \
    xx-go build -o /out/server ./cmd/server

FROM build AS test
RUN go test ./...

FROM ${REGISTRY}/runtime-base:${BASE_TAG} AS final
COPY --from=build --chown=65532:65532 /out/server /usr/local/bin/server
COPY --link --from=${REGISTRY}/ca-bundle:${BASE_TAG} /etc/ssl/certs /etc/ssl/certs
USER 65532
ENTRYPOINT ["/usr/local/bin/server"]
"""

PYTHON_APP = r"""
ARG PYTHON=3.12
FROM python:${PYTHON}-slim AS Wheels
RUN <<EOF
set -e
pip wheel --wheel-dir /wheels -r /requirements.txt
EOF

FROM python:${PYTHON}-slim
COPY <<-"EOF" /etc/app.conf
	[server]
	FROM = not-an-image
	EOF
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    pip install /wheels/*.whl
# Install the CLI from the tools image
COPY --from=ghcr.io/astral-sh/uv:0.4 /uv /bin/uv
CMD ["python", "-m", "app"]
"""

WINDOWS = """# escape=`
ARG WIN=ltsc2022
FROM mcr.microsoft.com/dotnet/sdk:8.0-windowsservercore-${WIN} AS build
WORKDIR C:\\src
COPY . .
RUN dotnet publish -c Release `
    -o C:\\out
FROM mcr.microsoft.com/dotnet/aspnet:8.0-nanoserver-${WIN}
COPY --from=build C:\\out C:\\app
ENTRYPOINT ["C:\\\\app\\\\App.exe"]
"""


class TestRealisticDockerfiles:
    def test_go_service(self):
        parsed = parse_dockerfile(GO_SERVICE.lstrip("\n"), path="svc/Dockerfile",
                                  build_args={"BUILDPLATFORM": "linux/amd64",
                                              "BASE_TAG": "2024.07"})
        assert [(s.index, s.name, s.base, s.platform, s.line) for s in parsed.stages] == [
            (0, "xx", "tonistiigi/xx:1.4", "linux/amd64", 6),
            (1, "build", "golang:1.22-alpine", "linux/amd64", 8),
            (2, "test", "build", None, 17),
            (3, "final", "registry.example.com/kiln/runtime-base:2024.07", None, 20),
        ]
        assert parsed.uses == (
            ImageUse("tonistiigi/xx:1.4", "from", 6, 0),
            ImageUse("golang:1.22-alpine", "from", 8, 1),
            ImageUse("registry.example.com/kiln/runtime-base:2024.07", "from", 20, 3),
            ImageUse("registry.example.com/kiln/ca-bundle:2024.07", "copy", 22, 3),
        )

    def test_python_app(self):
        parsed = parse_dockerfile(PYTHON_APP.lstrip("\n"), build_args={"PYTHON": "3.11"})
        assert [(s.name, s.base, s.line) for s in parsed.stages] == [
            ("wheels", "python:3.11-slim", 2), (None, "python:3.11-slim", 8)]
        assert [(u.ref, u.kind, u.line, u.stage) for u in parsed.uses] == [
            ("python:3.11-slim", "from", 2, 0),
            ("python:3.11-slim", "from", 8, 1),
            ("ghcr.io/astral-sh/uv:0.4", "copy", 17, 1),
        ]

    def test_windows_backtick_escape(self):
        parsed = parse_dockerfile(WINDOWS, path="win/Dockerfile")
        assert [use.ref for use in parsed.uses] == [
            "mcr.microsoft.com/dotnet/sdk:8.0-windowsservercore-ltsc2022",
            "mcr.microsoft.com/dotnet/aspnet:8.0-nanoserver-ltsc2022",
        ]
        assert [s.line for s in parsed.stages] == [3, 8]
        run = [i for i in iter_instructions(WINDOWS) if i.keyword == "RUN"][0]
        assert run.args == "dotnet publish -c Release     -o C:\\out"

    def test_kiln_family_child(self):
        text = """
            ARG KILN_REGISTRY=quay.io/acme
            ARG KILN_TAG=master
            FROM ${KILN_REGISTRY}/base:${KILN_TAG}
            LABEL maintainer="kiln"
            RUN --mount=type=bind,from=${KILN_REGISTRY}/wheels:${KILN_TAG},target=/wheels \\
                pip install --no-index --find-links /wheels app
            """
        parsed = parse(text, KILN_TAG="2025.1")
        assert [use.ref for use in parsed.uses] == ["quay.io/acme/base:2025.1",
                                                    "quay.io/acme/wheels:2025.1"]
        assert [u.kind for u in parsed.uses] == ["from", "mount"]


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

FROM_LINE = "FROM --platform=${PLAT:-linux/amd64} ${REG}/base:${TAG} AS Build"
PRELUDE = "ARG REG=registry.example.com\nARG TAG=1.2\n"


@settings(max_examples=150, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=len(FROM_LINE) - 1), max_size=8),
       st.sampled_from(["", " ", "\t "]))
def test_continuation_splitting_does_not_change_from(cuts, trailing):
    pieces = [FROM_LINE[a:b] for a, b in zip([0, *sorted(cuts)],
                                             [*sorted(cuts), len(FROM_LINE)], strict=True)]
    # A whitespace-only piece would be an empty continuation line, which Docker drops.
    assume(all(piece.strip() for piece in pieces[1:]))
    split = ("\\" + trailing + "\n").join(pieces)
    expected = parse_dockerfile(PRELUDE + FROM_LINE + "\nRUN true\n")
    actual = parse_dockerfile(PRELUDE + split + "\nRUN true\n")
    assert actual.stages == expected.stages
    assert actual.uses == expected.uses
    assert actual.stages[0].line == 3
    assert actual.stages[0].base == "registry.example.com/base:1.2"


BODY_LINES = st.sampled_from([
    "FROM evil:1", "COPY --from=evil / /", "RUN --mount=from=evil,target=/x true",
    "# escape=`", "", "   ", "\\", "EOF2", " EOF", "ARG X=1", "<<EOF", "echo $HOME",
])


@settings(max_examples=100, deadline=None)
@given(st.lists(BODY_LINES, max_size=12))
def test_heredoc_bodies_never_become_instructions(body):
    text = "FROM alpine\nRUN <<EOF\n" + "".join(line + "\n" for line in body) + "EOF\nUSER app\n"
    parsed = parse_dockerfile(text)
    assert [use.ref for use in parsed.uses] == ["alpine"]
    assert [(i.keyword, i.line) for i in iter_instructions(text)] == [
        ("FROM", 1), ("RUN", 2), ("USER", len(body) + 4)]
