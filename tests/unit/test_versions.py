"""Package constraints and version order per ecosystem (builder/security/versions.py)."""

from __future__ import annotations

import pytest

from builder.errors import ConfigError
from builder.security.versions import (
    KINDS,
    IncomparableVersion,
    apk_compare,
    compare,
    parse_constraint,
    version_problem,
)


def ordered(kind: str, versions: list[str]) -> None:
    """Each version is older than the next, by ``compare`` both ways, and equal to itself."""
    for older, newer in zip(versions, versions[1:], strict=False):
        assert compare(kind, older, newer) == -1, f"{older} < {newer}"
        assert compare(kind, newer, older) == 1, f"{newer} > {older}"
    for version in versions:
        assert compare(kind, version, version) == 0


# -- Debian (dpkg) -------------------------------------------------------------------------

def test_debian_order_tilde_sorts_before_everything():
    assert compare("deb", "3.0.15-1~deb12u1", "3.0.15-1") == -1
    ordered("deb", ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0-1", "1.0-1+b1", "1.0a"])
    ordered("deb", ["3.0.11-1~deb12u2", "3.0.15-1~deb12u1", "3.0.15-1", "3.0.15-1+deb12u1"])


def test_debian_order_epochs_beat_everything():
    assert compare("deb", "1:0.1", "2.0") == 1
    ordered("deb", ["9.9-9", "1:0.1", "1:0.1-1", "2:0"])
    assert compare("deb", "0:1.0", "1.0") == 0


def test_debian_order_numbers_are_numbers_and_letters_before_non_letters():
    ordered("deb", ["1.2", "1.9", "1.10", "1.10.1", "10"])
    ordered("deb", ["1.0a", "1.0+a", "1.0.a"])  # letters sort before '+' and '.'
    assert compare("deb", "1.0", "1.00") == 0
    assert compare("deb", "1.0", "1.0-0") == 0


# -- RPM -----------------------------------------------------------------------------------

def test_rpm_order():
    ordered("rpm", ["1.0~rc1-1", "1.0-1", "1.0^git1-1", "1.1-1"])
    ordered("rpm", ["1.0-1.el9", "1.0-2.el9", "1.0.1-1.el9", "1:0.1-1"])
    ordered("rpm", ["1.9", "1.10", "1.10a", "2"])
    ordered("rpm", ["3.0.7-24.el9", "3.0.7-25.el9", "3.2.2-6.el9_5"])
    assert compare("rpm", "0:1.0-1", "1.0-1") == 0     # no epoch is epoch 0


def test_rpm_constraint_without_release_compares_epoch_and_version_only():
    # As rpm compares a dependency (openssl < 3.0.7): the installed release is ignored.
    at_most = parse_constraint("rpm:openssl<=3.0.7")
    assert at_most.matches("rpm", "3.0.7-27.el9")
    assert not at_most.matches("rpm", "3.0.8-1.el9")
    assert not parse_constraint("rpm:openssl<3.0.7").matches("rpm", "3.0.7-1")
    assert parse_constraint("rpm:openssl=3.0.7").matches("rpm", "3.0.7-27.el9")
    # with a release, the whole EVR counts
    assert not parse_constraint("rpm:openssl<=3.0.7-1").matches("rpm", "3.0.7-27.el9")
    assert parse_constraint("rpm:openssl<3.0.7-28").matches("rpm", "3.0.7-27.el9")
    assert parse_constraint("rpm:openssl>=3.0.7").matches("rpm", "1:1.0-1")


# -- apk -----------------------------------------------------------------------------------

def test_apk_order():
    ordered("apk", ["1.0_alpha", "1.0_alpha1", "1.0_beta", "1.0_pre1", "1.0_rc1", "1.0",
                    "1.0-r1", "1.0_cvs", "1.0_svn", "1.0_git", "1.0_hg", "1.0_p1", "1.0a",
                    "1.0b", "1.0.1", "1.1", "1.10", "2"])
    ordered("apk", ["3.0.15-r0", "3.0.15-r1", "3.0.15-r10", "3.1.0-r0"])
    ordered("apk", ["1.0", "1.0~1a2b", "1.0~1a2b-r1"])


def test_apk_leading_zero_components_compare_as_text():
    assert apk_compare("1.01", "1.1") == -1
    assert apk_compare("1.010", "1.01") == 1
    assert apk_compare("1.001", "1.01") == -1
    assert apk_compare("01.1", "1.1") == 0            # not the first number


@pytest.mark.parametrize("version", ["", "a1", "1.", "1..2", "1_foo", "1-2", "1-r",
                                     "1.0a1", "1_p1a", "1-r1-r2", "1~", "1.0 ", "1.0-r1.2"])
def test_apk_refuses_what_apk_refuses(version):
    with pytest.raises(IncomparableVersion):
        apk_compare(version, "1.0")
    assert version_problem("apk", version) is not None


# -- PEP 440 -------------------------------------------------------------------------------

def test_pep440_order():
    ordered("pypi", ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.1",
                     "1.10", "1!0.1"])
    assert compare("pypi", "1.0", "1.0.0") == 0
    assert compare("pypi", "2.32.3", "2.32.0") == 1


def test_pypi_names_are_compared_normalised():
    constraint = parse_constraint("pypi:Foo_Bar.baz<2")
    assert constraint.names("pypi", "foo-bar-baz") and constraint.names("pypi", "FOO_BAR_BAZ")
    assert not constraint.names("deb", "foo-bar-baz")
    assert parse_constraint("foo-bar").names("deb", "foo-bar")
    assert not parse_constraint("foo-bar").names("deb", "foo_bar")


def test_versions_that_are_not_of_their_kind_cannot_be_compared():
    with pytest.raises(IncomparableVersion):
        compare("deb", "1:", "1.0")
    with pytest.raises(IncomparableVersion):
        compare("pypi", "not a version", "1.0")
    with pytest.raises(IncomparableVersion):
        compare("nix", "1.0", "1.0")


# -- constraints ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, name, op, version, kind", [
    ("less", "less", None, None, None),
    ("less>=0", "less", ">=", "0", None),
    ("less < 0:0", "less", "<", "0:0", None),
    ("openssl<3.0.15-1~deb12u1", "openssl", "<", "3.0.15-1~deb12u1", None),
    ("deb:libssl3=3.0.15-1", "libssl3", "=", "3.0.15-1", "deb"),
    ("pypi:requests==2.32.3", "requests", "=", "2.32.3", "pypi"),
    ("rpm:openssl-libs>1:3.0.7-27.el9", "openssl-libs", ">", "1:3.0.7-27.el9", "rpm"),
    ("apk:musl<=1.2.4-r2", "musl", "<=", "1.2.4-r2", "apk"),
    ("libstdc++6>=12", "libstdc++6", ">=", "12", None),
    ("libssl*", "libssl*", None, None, None),
])
def test_constraints_parse(text, name, op, version, kind):
    constraint = parse_constraint(text)
    assert (constraint.name, constraint.op, constraint.version, constraint.kind) == (
        name, op, version, kind)


def test_a_constraint_version_only_applies_to_the_kinds_it_is_valid_in():
    constraint = parse_constraint("less<0:0")
    assert set(constraint.kinds) == {"deb", "rpm"}
    assert not constraint.matches("deb", "590-2")
    with pytest.raises(IncomparableVersion, match="not a valid PEP 440 version"):
        constraint.matches("pypi", "1.0")
    assert parse_constraint("x>=1.0").kinds == KINDS


def test_operators():
    for op, expected in (("<", [True, False, False]), ("<=", [True, True, False]),
                         ("=", [False, True, False]), (">=", [False, True, True]),
                         (">", [False, False, True])):
        constraint = parse_constraint(f"less{op}590-2")
        assert [constraint.matches("deb", v) for v in ("590-1", "590-2", "590-2+b1")] == \
            expected, op
    assert parse_constraint("less").matches("deb", "anything at all")


def test_wildcards():
    constraint = parse_constraint("libssl*<3.0.15-1")
    assert constraint.names("deb", "libssl3") and constraint.names("deb", "libssl1.1")
    assert not constraint.names("deb", "openssl")
    assert parse_constraint("lib?ssl").names("deb", "libxssl")


@pytest.mark.parametrize("text, message", [
    ("", "the package constraint is empty"),
    ("   ", "the package constraint is empty"),
    ("less<<1", "unknown operator '<<'"),
    ("less!=1", "unknown operator '!='"),
    ("less=>1", "unknown operator '=>'"),
    ("less~1", "unknown operator '~'"),
    ("less>=", "the operator >= needs a version after it"),
    ("less>=1 2", "contains white space"),
    (">=1.0", "it names no package"),
    ("npm:left-pad", "unknown package kind 'npm'"),
    ("-less", "is not a package name"),
    ("le/ss", "is not a package name"),
    ("deb:less<abc", "is not a Debian version"),
    ("deb:less<1:", "is not a Debian version"),
    ("pypi:requests<1:0", "is not a PEP 440 version"),
    ("rpm:openssl<1-2-3", "is not an RPM version"),
    ("apk:musl<1.2-3", "is not an apk version"),
    ("less<%%", "is not a valid version for any package kind"),
])
def test_bad_constraints_are_one_sentence_config_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_constraint(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
