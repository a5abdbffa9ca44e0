"""Pod identities: one number per identity key, held while a pod has it."""

from __future__ import annotations

from podwire.agent import identity as ids
from podwire.agent.identity import PodIdentityKey
from podwire.agent.pod_identities import PodIdentities
from podwire.policy import Namespace, Pod


def key(labels: dict[str, str]) -> PodIdentityKey:
    return PodIdentityKey.of(Namespace("x"), Pod("x", "any", labels))


def test_pods_with_equal_keys_share_a_number_until_the_last_goes() -> None:
    identities = PodIdentities()
    number, created = identities.assign("x/a", key({"app": "web"}))
    assert created and number >= ids.POD_IDENTITY_BASE
    assert identities.assign("x/b", key({"app": "web"})) == (number, False)
    assert identities.has("x/a", key({"app": "web"})) and not identities.has("x/a", key({}))
    assert identities.of("x/b") == number and identities.key_of(number) == key({"app": "web"})
    assert identities.release("x/a") is None  # x/b still has it
    assert identities.release("x/b") == number
    assert identities.key_of(number) is None and identities.of("x/b") is None
    assert identities.release("x/b") is None


def test_a_released_number_is_reused_only_after_recycle() -> None:
    identities = PodIdentities()
    number, _ = identities.assign("x/a", key({"app": "web"}))
    identities.release("x/a")
    other, _ = identities.assign("x/b", key({"app": "db"}))
    assert other != number  # the maps may still hold entries for the old number
    identities.recycle()
    assert identities.assign("x/c", key({"app": "cache"})) == (number, True)
