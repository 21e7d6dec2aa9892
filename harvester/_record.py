"""Turn what a harvest collected (identity, cookies, API key) into the ``SessionRecord`` the cache stores (pure)."""

from __future__ import annotations

from datetime import datetime

from cache import Cookie, SessionRecord

from ._identity import Identity, impersonate_target
from ._recipes import Recipe


def make_record(
    recipe: Recipe,
    identity: Identity,
    cookies: list[Cookie],
    *,
    api_key: str | None,
    proxy: str | None,
    backend: str,
    now: datetime,
) -> SessionRecord:
    """Build the record of one harvest (pure).

    ``expires_at`` is the sooner of the proof cookie's expiry and ``now + recipe.ttl``.
    """
    expires_at = now + recipe.ttl
    for cookie in cookies:
        if cookie.name == recipe.proof_cookie and cookie.expires is not None:
            proof = datetime.fromtimestamp(cookie.expires, now.tzinfo)
            expires_at = min(expires_at, proof)
    headers = {**identity.headers(), **recipe.extra_headers()}
    return SessionRecord(
        provider=recipe.name,
        cookies=list(cookies),
        user_agent=identity.user_agent,
        headers=headers,
        api_key=api_key,
        extras={"backend": backend, "ttl_seconds": int(recipe.ttl.total_seconds())},
        proxy=proxy,
        browser=f"Chromium/{identity.major}",
        impersonate=impersonate_target(identity.major),
        origin=recipe.origin,
        harvested_at=now,
        expires_at=expires_at,
    )
