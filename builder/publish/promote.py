"""Promotion: ``T-deployed`` -> ``T-old``, a revision -> ``T-deployed``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from builder.errors import SyncError
from builder.publish.revisions import deployed_tag, old_tag, revision_tag, revisions
from builder.registry.client import RegistryClient

# -- promote ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromotePlan:
    image: str
    repository: str
    candidate: str                  # the tag chosen: T-N, or T
    candidate_digest: str
    candidate_revision: str | None  # the revision tag the candidate is, if found
    deployed_digest: str | None     # what T-deployed names now
    deployed_revision: str | None
    current: bool                   # already deployed: nothing to do


@dataclass(frozen=True)
class PromoteResult:
    image: str
    status: str                     # "promoted", "current", "planned", "skipped", "failed"
    plan: PromotePlan | None = None
    error: str | None = None


def plan_promote(client: RegistryClient, name: str, repository: str, tag: str,
                 revision: int | None = None) -> PromotePlan | None:
    """Which image becomes ``T-deployed`` (``T-N``, else what ``T`` names); None if the
    repository has no tag T."""
    tags = client.list_tags(repository)
    numbers = revisions(tags, tag)
    candidate = revision_tag(tag, revision) if revision is not None else tag
    if revision is None and tag not in tags:
        return None
    if candidate not in tags:
        known = ", ".join(revision_tag(tag, n) for n in numbers[-5:]) or "none"
        raise SyncError(f"{client.reference(repository, candidate)} does not exist "
                        f"(newest revisions: {known})")
    candidate_digest = client.manifest_digest(repository, candidate)
    if candidate_digest is None:
        raise SyncError(f"{client.reference(repository, candidate)} has no manifest")
    deployed_digest = None
    if deployed_tag(tag) in tags:
        deployed_digest = client.manifest_digest(repository, deployed_tag(tag))
    names = _revision_names(client, repository, tag, numbers,
                            {candidate_digest, deployed_digest} - {None})
    return PromotePlan(
        image=name, repository=repository, candidate=candidate,
        candidate_digest=candidate_digest,
        candidate_revision=candidate if revision is not None else names.get(candidate_digest),
        deployed_digest=deployed_digest,
        deployed_revision=names.get(deployed_digest) if deployed_digest else None,
        current=deployed_digest == candidate_digest)


def _revision_names(client: RegistryClient, repository: str, tag: str,
                    numbers: Sequence[int], digests: set[str]) -> dict[str, str]:
    """``digest -> newest revision tag naming it``, looking from the newest revision down."""
    names: dict[str, str] = {}
    for number in reversed(numbers):
        if len(names) == len(digests):
            break
        candidate = revision_tag(tag, number)
        digest = client.manifest_digest(repository, candidate)
        if digest in digests and digest not in names:
            names[digest] = candidate
    return names


def promote(client: RegistryClient, plan: PromotePlan, tag: str) -> None:
    """``T-deployed`` -> ``T-old``, then the candidate -> ``T-deployed``, by digest.

    Rerunnable: an interruption between the two leaves ``T-old`` equal to
    ``T-deployed``, and a rerun moves ``T-deployed``.
    """
    if plan.current:
        return
    if plan.deployed_digest is not None:
        client.put_tag(plan.repository, plan.deployed_digest, old_tag(tag))
    client.put_tag(plan.repository, plan.candidate_digest, deployed_tag(tag))


def promote_labels(client: RegistryClient, plan: PromotePlan
                   ) -> tuple[Mapping[str, str] | None, Mapping[str, str]]:
    """The labels of the deployed image (None if none is) and of the candidate."""
    candidate = client.manifest(plan.repository, plan.candidate_digest)
    if candidate is None:
        raise SyncError(f"{client.reference(plan.repository, plan.candidate)} disappeared")
    if plan.deployed_digest is None:
        return None, candidate.labels
    deployed = client.manifest(plan.repository, plan.deployed_digest)
    return (deployed.labels if deployed else None), candidate.labels
