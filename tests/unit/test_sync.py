"""Sync planning, promote and output without a registry: a fake client in memory."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import yaml

from builder.build.labels import FINGERPRINT
from builder.errors import Cancelled, ConfigError, KilnError, SyncError
from builder.publish.origins import SourceImage
from builder.publish.output import output_document, to_yaml
from builder.publish.promote import plan_promote, promote
from builder.publish.revisions import SetNaming, family, revision_number, revisions, select_names
from builder.publish.sync import (
    Action,
    SyncSettings,
    SyncStatus,
    execute,
    plan_image,
    sync,
    sync_image,
)
from builder.reference import parse_registry_reference, reference_problem, split_reference
from builder.registry.media import ManifestInfo

REPO = "kolla/nova"


@dataclass
class Image:
    fingerprint: str | None
    config: str

    @property
    def digest(self) -> str:
        data = json.dumps({"config": {"digest": self.config}}).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()


def image(fingerprint: str | None, config: str | None = None) -> Image:
    return Image(fingerprint, config or "sha256:" + hashlib.sha256(
        str(fingerprint).encode()).hexdigest())


@dataclass
class FakeRegistry:
    """Tags of one repository, the few client calls sync makes, and a log of writes."""

    tags: dict[str, Image] = field(default_factory=dict)
    host: str = "registry.test"
    puts: list[tuple[str, str]] = field(default_factory=list)

    def reference(self, repository, reference):
        return f"{self.host}/{repository}:{reference}"

    def ping(self):
        pass

    def _find(self, reference) -> Image | None:
        if reference.startswith("sha256:"):
            return next((i for i in self.tags.values() if i.digest == reference), None)
        return self.tags.get(reference)

    def list_tags(self, repository):
        return list(self.tags)

    def manifest_digest(self, repository, reference):
        found = self._find(reference)
        return found.digest if found else None

    def manifest(self, repository, reference, labels=True):
        found = self._find(reference)
        if found is None:
            return None
        read = {FINGERPRINT: found.fingerprint} if found.fingerprint and labels else {}
        return ManifestInfo(found.digest, "m", found.config, read, "2024-01-01", 1)

    def put_tag(self, repository, source_reference, tag):
        self.tags[tag] = self._find(source_reference)
        self.puts.append((tag, source_reference))
        return self.tags[tag].digest


@dataclass
class FakeSource:
    """An engine-like source: one image per name, pushed by putting it in the registry."""

    images_: dict[str, Image]
    description: str = "the fake engine"
    during_publish: Callable[[str, threading.Event | None], None] | None = None

    def images(self, naming):
        return {name: f"kolla/{name}:T" for name in self.images_}

    def resolve(self, name):
        found = self.images_.get(name)
        if found is None:
            return None
        return SourceImage(name, f"kolla/{name}:T", pin=found.config, image_id=found.config,
                           fingerprint=found.fingerprint)

    def fingerprint(self, source_image):
        return source_image.fingerprint

    def publish(self, source_image, dest, repository, tag, cancel=None):
        if self.during_publish is not None:
            self.during_publish(source_image.name, cancel)
        dest.tags[tag] = self.images_[source_image.name]
        dest.puts.append((tag, "push"))
        return dest.tags[tag].digest


def settings(tag="ocata", **kwargs):
    naming = SetNaming("kolla", "", tag)
    return SyncSettings(source=naming, destination=naming, **kwargs)


def plan(dest, source_image, tag="ocata", **kwargs):
    return plan_image(FakeSource({"nova": source_image}), dest, "nova",
                      settings(tag, **kwargs))[0]


# -- tags ---------------------------------------------------------------------------------

def test_revision_numbers():
    assert revision_number("ocata-3", "ocata") == 3
    assert revision_number("ocata-12", "ocata") == 12
    for other in ("ocata", "ocata-0", "ocata-01", "ocata-deployed", "ocata-1a", "ocatax-1",
                  "ocata--1", "ocata-١"):
        assert revision_number(other, "ocata") is None, other
    assert revisions(["ocata-10", "ocata-2", "ocata", "x", "ocata-old"], "ocata") == (2, 10)
    assert revision_number("4.0.0-rc1-2", "4.0.0-rc1") == 2
    assert family(["ocata-old", "ocata-1", "x", "ocata", "ocata-10", "ocata-deployed"],
                  "ocata") == ["ocata", "ocata-10", "ocata-1", "ocata-deployed", "ocata-old"]


def test_references():
    assert split_reference("kolla/nova:ocata") == (None, "kolla/nova", "ocata")
    assert split_reference("127.0.0.1:5000/kolla/nova:ocata") == \
        ("127.0.0.1:5000", "kolla/nova", "ocata")
    assert split_reference("localhost/kolla/nova") == ("localhost", "kolla/nova", None)
    assert parse_registry_reference("kolla/nova:ocata") is None
    assert parse_registry_reference("quay.io/kolla/nova") == ("quay.io", "kolla/nova",
                                                              "latest")
    assert parse_registry_reference("docker.io/busybox:1") == ("docker.io", "library/busybox",
                                                              "1")
    digest = "sha256:" + "a" * 64
    assert parse_registry_reference(f"h:5000/k/n@{digest}") == ("h:5000", "k/n", digest)


def test_set_naming():
    naming = SetNaming("kolla", "centos-", "ocata")
    assert naming.repository("nova") == "kolla/centos-nova"
    assert naming.member("kolla/centos-nova") == "nova"
    for other in ("kolla/nova", "kolla/centos-", "kollax/centos-nova", "kolla/centos-a/b"):
        assert naming.member(other) is None
    with pytest.raises(ConfigError):
        SetNaming("Kolla", "", "ocata")


def test_select_names():
    assert select_names(["nova-api", "nova", "glance"], ["^nova"], "x") == ["nova", "nova-api"]
    assert select_names(["b", "a"], [], "x") == ["a", "b"]
    with pytest.raises(ConfigError, match=r"no image at x matches 'cinder' \(images: a\)"):
        select_names(["a"], ["cinder"], "x")
    with pytest.raises(ConfigError, match="no image of the set is at x"):
        select_names([], [], "x")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        select_names(["a"], ["("], "x")


# -- planning -------------------------------------------------------------------------------

def test_first_sync_pushes_revision_1():
    result = plan(FakeRegistry(), image("fp1"))
    assert (result.action, result.target) == (Action.PUSH, "ocata-1")


def test_same_fingerprint_is_unchanged_even_when_rebuilt():
    old = image("fp1")
    dest = FakeRegistry({"ocata-1": old, "ocata": old})
    assert plan(dest, old).action is Action.UNCHANGED                       # same image
    rebuilt = image("fp1", config="sha256:" + "b" * 64)
    assert plan(dest, rebuilt).action is Action.UNCHANGED                   # same inputs


def test_changed_fingerprint_pushes_the_next_revision():
    one, two = image("fp1"), image("fp2")
    dest = FakeRegistry({"ocata-1": one, "ocata-2": two, "ocata": two, "ocata-old": one,
                         "ocata-deployed": one, "ocata-rc": one})
    result = plan(dest, image("fp3"))
    assert (result.action, result.target, result.revisions) == (Action.PUSH, "ocata-3", (1, 2))


def test_floating_tag_behind_the_newest_revision_is_moved():
    one, two = image("fp1"), image("fp2")
    dest = FakeRegistry({"ocata-1": one, "ocata-2": two, "ocata": one})
    result = plan(dest, two)
    assert (result.action, result.target) == (Action.MOVE, "ocata-2")
    outcome = execute(result, None, FakeSource({}), dest, settings())
    assert outcome.status is SyncStatus.MOVED and dest.tags["ocata"] is two


def test_tags_that_are_not_revisions_are_refused_unless_forced():
    foreign = image(None, config="sha256:" + "f" * 64)
    dest = FakeRegistry({"ocata": foreign})
    with pytest.raises(SyncError, match="exists but no ocata-N revision does"):
        plan(dest, image("fp1"))
    assert plan(dest, image("fp1"), force=True).target == "ocata-1"

    one = image("fp1")
    dest = FakeRegistry({"ocata-1": one, "ocata": foreign})
    with pytest.raises(SyncError, match="names an image that is none of its revisions"):
        plan(dest, image("fp2"))
    dest = FakeRegistry({"ocata-1": foreign, "ocata": foreign})
    with pytest.raises(SyncError, match="ocata-1 carries no kiln.fingerprint label"):
        plan(dest, image("fp2"))
    assert plan(dest, image("fp2"), force=True).target == "ocata-2"


def test_source_without_fingerprint_is_an_error():
    dest = FakeRegistry({"ocata-1": image("fp1"), "ocata": image("fp1")})
    with pytest.raises(SyncError, match="carries no kiln.fingerprint label"):
        plan(dest, image(None))


def test_release_tags():
    one = image("fp1")
    assert plan(FakeRegistry(), one, tag="4.0.0").target == "4.0.0"
    dest = FakeRegistry({"4.0.0": one})
    assert plan(dest, one, tag="4.0.0").action is Action.UNCHANGED
    with pytest.raises(SyncError, match="is immutable"):
        plan(dest, image("fp2"), tag="4.0.0")
    forced = plan(dest, image("fp2"), tag="4.0.0", force=True)
    assert (forced.action, forced.target) == (Action.PUSH, "4.0.0")
    custom = plan(FakeRegistry(), one, tag="ocata", release_pattern="^ocata$")
    assert custom.target == "ocata"


def test_a_revision_is_complete_before_the_floating_tag_moves():
    dest = FakeRegistry({"ocata-1": image("fp1"), "ocata": image("fp1")})
    source = FakeSource({"nova": image("fp2")})
    seen = []

    def after_revision(p):
        seen.append((p.target, dest.tags["ocata-2"].fingerprint,
                     dest.tags["ocata"].fingerprint))

    result = sync_image(source, dest, "nova", settings(), after_revision)
    assert result.status is SyncStatus.PUSHED and result.reference.endswith("nova:ocata-2")
    assert seen == [("ocata-2", "fp2", "fp1")]
    assert dest.puts == [("ocata-2", "push"), ("ocata", dest.tags["ocata-2"].digest)]


def test_dry_run_changes_nothing_and_failures_are_results():
    dest = FakeRegistry({"ocata-1": image("fp1"), "ocata": image("fp1")})
    source = FakeSource({"nova": image("fp2")})
    result = sync_image(source, dest, "nova", settings(dry_run=True))
    assert result.status is SyncStatus.PLANNED and result.plan.target == "ocata-2"
    assert dest.puts == []
    failed = sync_image(FakeSource({"nova": image(None)}), dest, "nova", settings())
    assert failed.status is SyncStatus.FAILED and "kiln.fingerprint" in failed.error
    skipped = sync_image(FakeSource({}), dest, "nova", settings())
    assert skipped.status is SyncStatus.SKIPPED


# -- promote ------------------------------------------------------------------------------------

def test_promote_rotates_deployed_and_old():
    one, two = image("fp1"), image("fp2")
    dest = FakeRegistry({"ocata-1": one, "ocata-2": two, "ocata": two, "ocata-deployed": one})
    found = plan_promote(dest, "nova", REPO, "ocata")
    assert (found.candidate_revision, found.deployed_revision) == ("ocata-2", "ocata-1")
    promote(dest, found, "ocata")
    assert dest.tags["ocata-deployed"] is two and dest.tags["ocata-old"] is one
    again = plan_promote(dest, "nova", REPO, "ocata")
    assert again.current
    dest.puts.clear()
    promote(dest, again, "ocata")
    assert dest.puts == []
    back = plan_promote(dest, "nova", REPO, "ocata", revision=1)
    promote(dest, back, "ocata")
    assert dest.tags["ocata-deployed"] is one and dest.tags["ocata-old"] is two
    with pytest.raises(SyncError, match="ocata-9 does not exist"):
        plan_promote(dest, "nova", REPO, "ocata", revision=9)
    assert plan_promote(FakeRegistry(), "nova", REPO, "ocata") is None


# -- output ----------------------------------------------------------------------------------------

def test_output_document_and_yaml():
    dest = FakeRegistry({"ocata-1": image("fp1"), "ocata": image("fp1")})
    results = [sync_image(FakeSource({"nova": image("fp2")}), dest, "nova", settings()),
               sync_image(FakeSource({"glance": image(None)}), FakeRegistry(), "glance",
                          settings())]
    document = output_document(results, "registry.test", settings())
    assert document["images"] == {"nova": {"reference": "registry.test/kolla/nova:ocata-2",
                                           "tag": "ocata-2",
                                           "digest": dest.tags["ocata-2"].digest}}
    assert document["failed"] == ["glance"]
    assert yaml.safe_load(to_yaml(document)) == document
    tricky = {"on": ["yes", None, True, 1.5, "a: b", "#x", ""], "1": {}, "k": [],
              "nested": [{"a": [1]}, []], "ünï": "\n\"'"}
    assert yaml.safe_load(to_yaml(tricky)) == tricky


# -- interruption ----------------------------------------------------------------------------

def test_a_cancelled_sync_starts_nothing_and_finishes_complete_revisions():
    cancel = threading.Event()
    dest = FakeRegistry({"ocata-1": image("fp1"), "ocata": image("fp1")})
    # Ctrl-C while the first image is being published: it is finished, T moved
    source = FakeSource({"nova": image("fp2"), "glance": image("fp3"), "heat": image("fp4")},
                        during_publish=lambda name, event: event.set())
    results = sync(source, dest, [], settings(threads=1), cancel=cancel)
    assert [(r.image, r.status) for r in results] == [
        ("glance", SyncStatus.PUSHED), ("heat", SyncStatus.STOPPED), ("nova", SyncStatus.STOPPED)]
    assert results[1].error == "interrupted before it started"
    assert dest.tags["ocata"].fingerprint == "fp3"
    document = output_document(results, "registry.test", settings())
    assert list(document["images"]) == ["glance"]
    assert (document["failed"], document["stopped"]) == ([], ["heat", "nova"])


def test_an_interrupted_publication_leaves_the_floating_tag_alone():
    cancel = threading.Event()
    one = image("fp1")

    def stopped(name, event):
        event.set()
        raise Cancelled("interrupted before every blob was copied from x; y was not written")

    dest = FakeRegistry({"ocata-1": one, "ocata": one})
    result = sync_image(FakeSource({"nova": image("fp2")}, during_publish=stopped), dest,
                        "nova", settings(), cancel=cancel)
    assert result.status is SyncStatus.STOPPED and "y was not written" in result.error
    assert dest.puts == [] and dest.tags["ocata"] is one

    # an engine push that Ctrl-C broke: stopped, not failed; T not moved
    def broken(name, event):
        event.set()
        raise KilnError("pushing it failed: signal: interrupt")

    cancel.clear()
    result = sync_image(FakeSource({"nova": image("fp2")}, during_publish=broken), dest,
                        "nova", settings(), cancel=cancel)
    assert result.status is SyncStatus.STOPPED
    assert result.error.startswith("interrupted while pushing registry.test/kolla/nova:ocata-2")
    assert result.error.endswith("ocata was not moved")
    assert dest.puts == [] and dest.tags["ocata"] is one

    # planned, then interrupted before publishing: nothing is done
    moved = FakeRegistry({"ocata-1": one, "ocata-2": image("fp2"), "ocata": one})
    cancel.set()
    assert sync_image(FakeSource({"nova": image("fp2")}), moved, "nova", settings(),
                      cancel=cancel).status is SyncStatus.STOPPED
    assert moved.puts == []


# -- references ------------------------------------------------------------------------------

def test_reference_problems():
    digest = "sha256:" + "a" * 64
    for good in ("nova", "kolla/nova:ocata", "127.0.0.1:5000/kolla/nova:4.0.0-1",
                 f"quay.io/kolla/nova@{digest}", f"kolla/nova:x@{digest}", "localhost/a_b:c",
                 "[::1]:5000/kolla/nova", "a__b/c--d.e:T_1"):
        assert reference_problem(good) is None, good
    for bad, problem in (
            ("", "it is empty"), ("  ", "it is empty"), ("a b", "it contains white space"),
            ("h:99999/x:y", "port 99999 of registry h:99999 is not between 1 and 65535"),
            ("h:0/x", "port 0 of registry h:0 is not between 1 and 65535"),
            ("h:ab/x", "port 'ab' of registry 'h:ab' is not a number"),
            ("h:/x", "registry 'h:' has an empty port"),
            ("-h.io/x", "'-h.io' is not a valid registry host name"),
            ("Kolla/nova", "its repository name 'Kolla/nova' must be lower-case"),
            ("a:b:c", "'a:b' is not a valid repository name"),
            ("kolla//nova", "'kolla//nova' is not a valid repository name"),
            ("kolla/nova:", "its tag is empty"), ("kolla/nova:.x", "its tag '.x' is not"),
            ("kolla/nova:" + "x" * 129, "is not a valid tag"),
            ("kolla/nova@sha256:zz", "its digest 'sha256:zz' is not algorithm:hex"),
            ("h.io/", "it names no repository"), ("a/" * 130 + "b", "longer than 255")):
        found = reference_problem(bad)
        assert found is not None and problem in found, (bad, found)
