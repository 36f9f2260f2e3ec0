"""The one LABEL instruction a stamp writes (its round trip through every engine's
Dockerfile parser is tests/integration/test_engines.py's)."""

from __future__ import annotations

import json

from builder.engines.base import label_instruction


def test_every_label_in_one_instruction_quoted_and_escaped():
    text, rest = label_instruction({"b": 'say "hi" $HOME \\', "a": "plain"})
    assert rest == {}
    assert text == 'LABEL \\\n"a"="plain" \\\n"b"="say \\"hi\\" \\$HOME \\\\"\n'


def test_no_physical_line_is_longer_than_the_width_and_no_cut_splits_an_escape():
    value = json.dumps({f"p{i}": f'"{i}"\\$#x y' for i in range(3000)})
    text, rest = label_instruction({"kiln.packages": value, "k": "v"}, width=1000)
    assert rest == {}
    lines = text.splitlines()
    assert lines[0] == "LABEL \\" and len(lines) > len(value) // 1000
    assert max(len(line) for line in lines) <= 1002      # the width, then " \\" at most
    for line, following in zip(lines[1:], lines[2:], strict=False):
        assert following[:1] not in ("#", " ", "\t", "")
        piece = line[:-1] if not line.endswith(" \\") else line[:-2]
        assert line.endswith("\\") and not piece.endswith("\\")
    # joining the continuations gives back the one logical line
    joined = text.replace("\\\n", "")
    assert joined.count('"kiln.packages"=') == 1 and len(joined) > len(value)


def test_what_a_dockerfile_cannot_hold_is_left_to_build_labels():
    text, rest = label_instruction({"lines": "one\ntwo", "cr": "a\rb", "k=ey": "v",
                                    "uncuttable": " " * 50, "ok": "1"}, width=20)
    assert rest == {"lines": "one\ntwo", "cr": "a\rb", "k=ey": "v", "uncuttable": " " * 50}
    assert text == 'LABEL \\\n"ok"="1"\n'


def test_no_labels_no_instruction():
    assert label_instruction({}) == ("", {})
