"""The API calls behind the authorisation of Secret references: the operator's
key for admission records, who the operator itself is, and SubjectAccessReviews
for the user who wrote a Connection."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Mapping, Sequence
from typing import Any

from patchbay import kube
from patchbay.core.authorization import SecretUse, opted_in
from patchbay.core.binding import MANAGED_BY

KEY_FIELD = "key"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
# reviews in flight for one admission request; a Connection references at most 67 Secrets
REVIEWS_AT_ONCE = 8


async def load_admission_key(client: kube.KubeClient, namespace: str, name: str) -> bytes:
    """The key of admission records, from its Secret; created with 32 random bytes when
    absent. Replicas starting together create it once: the loser of the race reads it."""
    path = kube.secret_path(namespace, name)
    secret = await client.get(path)
    if secret is None:
        fresh = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "type": "Opaque",
            "data": {KEY_FIELD: base64.b64encode(os.urandom(32)).decode()},
        }
        try:
            await client.create(kube.secrets_path(namespace), fresh)
        except kube.KubeApiError as exc:
            if exc.status != 409:
                raise
        secret = await client.get(path)
    data = (secret or {}).get("data") or {}
    if KEY_FIELD not in data:
        raise ValueError(f"Secret {namespace}/{name} has no {KEY_FIELD!r}")
    return base64.b64decode(data[KEY_FIELD])


async def own_username(client: kube.KubeClient) -> str | None:
    """The user the operator acts as, so its own writes never count as a user's."""
    answer = await client.create(
        SELF_SUBJECT_REVIEWS,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = ((answer or {}).get("status") or {}).get("userInfo") or {}
    name = user.get("username")
    return name if isinstance(name, str) else None


async def may_get(
    client: kube.KubeClient, user: Mapping[str, Any], namespace: str, secret: str
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.get("username", ""),
            "uid": user.get("uid", ""),
            "groups": list(user.get("groups") or []),
            "extra": dict(user.get("extra") or {}),
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "get",
                "group": "",
                "resource": "secrets",
                "name": secret,
            },
        },
    }
    answer = await client.create(SUBJECT_ACCESS_REVIEWS, review)
    return bool(((answer or {}).get("status") or {}).get("allowed"))


async def first_denied(
    client: kube.KubeClient,
    user: Mapping[str, Any],
    namespace: str,
    connection: str,
    uses: Sequence[SecretUse],
) -> SecretUse | None:
    """The first referenced Secret the user may not get and that does not allow the
    Connection by annotation, or None when every reference is authorised."""
    limit = asyncio.Semaphore(REVIEWS_AT_ONCE)

    async def allowed(use: SecretUse) -> bool:
        async with limit:
            if await may_get(client, user, namespace, use.name):
                return True
            secret = await client.request(
                "GET", kube.secret_path(namespace, use.name), accept=kube.METADATA
            )
            return secret is not None and opted_in(
                (secret.get("metadata") or {}).get("annotations"), connection
            )

    answers = await asyncio.gather(*(allowed(use) for use in uses))
    return next((use for use, ok in zip(uses, answers, strict=True) if not ok), None)
