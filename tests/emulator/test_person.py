"""The test-only `/__emulator__/person/...` routes, through which a test plays the person at a visible browser."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.emulator import EmulatorThread

from .test_bounded import answer_challenge


async def call(client: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request; its status and JSON body."""
    async with client.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


async def challenge_nonce(client: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """Load the challenge page; its nonce and HTML."""
    async with client.get(url + "/") as resp:
        html = await resp.text()
    return html.split('"cNounce": "', 1)[1].split('"', 1)[0], html


async def test_person_solves_open_interactive_challenges_only(
    emulator: EmulatorThread, client: aiohttp.ClientSession
) -> None:
    """`solve` marks the interactive pages already open (not managed ones, not later ones); pages poll for it."""
    base = emulator.url + "/__emulator__/person/solve"
    await challenge_nonce(client, emulator.url)  # a managed challenge: no person needed
    assert await call(client, "POST", base) == (200, {"solved": 0})
    emulator.configure(variant="interactive")
    nonce, html = await challenge_nonce(client, emulator.url)
    assert "/__emulator__/person/solve?nonce=" in html and "ev.isTrusted === true" in html
    assert await call(client, "GET", base, params={"nonce": nonce}) == (200, {"solved": False})
    assert await call(client, "POST", base) == (200, {"solved": 1})
    assert await call(client, "GET", base, params={"nonce": nonce}) == (200, {"solved": True})
    later, _ = await challenge_nonce(client, emulator.url)
    assert await call(client, "GET", base, params={"nonce": later}) == (200, {"solved": False})
    assert emulator.stats["person_polls"] == 3 and emulator.stats["clearances_issued"] == 0


async def test_person_signs_in_once(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`sign-in` is what waiting login pages see until that person's login lands; bad names get 400."""
    emulator.configure(variant="login-required")
    base = emulator.url + "/__emulator__/person/sign-in"
    assert await call(client, "GET", base) == (200, {"username": None})
    assert (await call(client, "POST", base, json={"username": " "}))[0] == 400
    assert await call(client, "POST", base, json={"username": "ada"}) == (200, {"ok": True})
    assert await call(client, "GET", base) == (200, {"username": "ada"})
    await answer_challenge(client, emulator.url)
    async with client.get(emulator.url + "/") as resp:
        assert "/__emulator__/person/sign-in" in await resp.text()  # the app page waits for the person
    async with client.post(emulator.url + "/login", data={"username": "ada", "password": "pw"}) as resp:
        assert resp.status == 200 and "/__emulator__/person/sign-in" not in await resp.text()  # signed in
    assert await call(client, "GET", base) == (200, {"username": None})
    assert emulator.stats["logins"] == 1


async def test_pages_wait_for_a_person_only_in_their_variant(
    emulator: EmulatorThread, client: aiohttp.ClientSession
) -> None:
    """The normal variant's pages never poll the person routes, so existing behaviour is unchanged."""
    await answer_challenge(client, emulator.url)
    for path in ("/", "/login"):
        async with client.get(emulator.url + path) as resp:
            assert "__emulator__" not in await resp.text()
    emulator.configure(variant="interactive")
    client.cookie_jar.clear()
    _, html = await challenge_nonce(client, emulator.url)
    assert "/__emulator__/person/solve" in html


async def test_identity_provider_page_sends_the_person_back(
    emulator: EmulatorThread, client: aiohttp.ClientSession
) -> None:
    """The stand-in identity provider is ungated, returns to `next`, and refuses a `next` that is not http(s)."""
    url = emulator.url + "/__emulator__/person/idp"
    async with client.get(url, params={"next": "http://127.0.0.1:1/login?a=</script>"}) as resp:
        html = await resp.text()
        assert resp.status == 200
    assert 'location.replace("http://127.0.0.1:1/login?a=\\u003c/script>")' in html
    async with client.get(url, params={"next": "javascript:alert(1)"}) as resp:
        assert resp.status == 400
    assert emulator.stats["challenge_pages"] == 0
