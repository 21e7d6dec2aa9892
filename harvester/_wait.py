"""What to do next while a page clears: a pure function from what the page shows to an action.

The harvester's I/O loop (``_harvest.py``) takes a snapshot, asks :func:`next_action`, and carries the action
out: wait for the page to change, reload it, return, or raise. Every decision (5xx: reload; blocked: give up;
interactive while headless: ask for ``--headful``; the deadline passed: say why) lives here, tested by a table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._classify import PageState, Verdict
from ._exceptions import (
    BlockedError,
    ChallengeTimeout,
    HarvestError,
    NeedsHeadfulError,
    SiteUnreachableError,
)
from ._net import describe_net_error, net_error_in
from ._recipes import Recipe

# Longest wait between page snapshots while a challenge runs. The loop wakes sooner on the page's events: a
# response setting a cookie (the clearance), a navigation committing, DOMContentLoaded, load. So clearing
# never waits for the poll; it only catches a page that rewrites its DOM without any of those.
POLL_INTERVAL = 0.1
RELOAD_INTERVAL = 1.0  # seconds between reloads while the site answers 5xx
# The site set the proof cookie, but its challenge page has not moved on for this long: load the start URL
# ourselves (the clearance is in the jar) instead of waiting for the page's own reload until the deadline.
PROOF_RELOAD_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Progress:
    """What the loop knows besides the page: time spent, since the last reload, and whether the site ever answered."""

    elapsed: float
    timeout: float
    since_reload: float = 0.0
    answered: bool = False  # some response arrived (a status, or a document that is more than a blank tab)
    headful: bool = False
    shown: Verdict = "loading"  # the last verdict other than "loading" (a page reloading itself shows none)
    since_proof: float | None = None  # seconds since a response set the recipe's proof cookie (None: none did)


@dataclass(frozen=True, slots=True)
class Cleared:
    """The page is the site itself: read the session and the cookies."""


@dataclass(frozen=True, slots=True)
class Reload:
    """Load the start URL again (the site answered 5xx)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Look again once the page changes, or after ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Fail:
    """Stop the harvest with ``error``."""

    error: HarvestError


Action = Cleared | Reload | Wait | Fail

_ANNOUNCE = {"challenge": "waiting for the challenge", "unavailable": "the site is failing; retrying"}


def next_action(recipe: Recipe, page: PageState, verdict: Verdict, progress: Progress) -> Action:
    """Decide what the loop does after a snapshot of the page (pure)."""
    if verdict == "cleared":
        return Cleared()
    if verdict == "unreachable":
        return Fail(unreachable_error(recipe, page))
    if verdict == "blocked":
        return Fail(
            BlockedError(
                f'{recipe.start_url} answered "Access denied" (HTTP {page.status or "?"}); '
                "this IP or proxy is blocked: try another --proxy, or later",
                provider=recipe.name,
                url=recipe.start_url,
                status=page.status,
            )
        )
    if verdict in ("interactive", "login_required") and not progress.headful:
        return Fail(needs_headful(recipe, "interactive" if verdict == "interactive" else "login"))
    if progress.elapsed >= progress.timeout:
        return Fail(deadline_error(recipe, verdict, page.status, progress))
    if verdict == "unavailable" and progress.since_reload >= RELOAD_INTERVAL:
        return Reload()
    if (
        verdict == "challenge"
        and progress.since_proof is not None
        and min(progress.since_proof, progress.since_reload) >= PROOF_RELOAD_AFTER
    ):
        return Reload()  # cleared, but the challenge page stays: it missed its own reload
    return Wait(max(0.0, min(POLL_INTERVAL, progress.timeout - progress.elapsed)))


def announcement(verdict: Verdict) -> str | None:
    """The progress line for a verdict worth telling a person about (None: say nothing)."""
    if verdict in ("loading", "cleared", "blocked", "unreachable"):
        return None
    return _ANNOUNCE.get(verdict, f"waiting for a person ({verdict.replace('_', ' ')})")


def deadline_error(recipe: Recipe, verdict: Verdict, status: int | None, progress: Progress) -> HarvestError:
    """The error for a page that had not cleared when the deadline passed, by what it showed last (pure)."""
    timeout = progress.timeout
    url = recipe.start_url
    if verdict == "loading":
        verdict = progress.shown  # caught mid-reload: judge by what the page showed before
    if verdict == "unavailable":
        return BlockedError(
            f"{url} kept answering HTTP {status or '5xx'} for {timeout:g} s; try again later",
            provider=recipe.name,
            url=url,
            status=status,
        )
    if not progress.answered:
        return SiteUnreachableError(
            f"no answer from {url} within {timeout:g} s; check the URL, or try again later",
            provider=recipe.name,
            url=url,
            reason="no answer",
        )
    if verdict in ("interactive", "login_required"):
        # Only reachable with --headful: a headless harvest stops at the first such page.
        what = "interactive challenge" if verdict == "interactive" else "login"
        message = (
            f"nobody completed the {what} at {url} in the browser window within {timeout:g} s; "
            "run again and complete it there (a longer --timeout gives more time)"
        )
    else:
        message = f"the challenge at {url} did not clear within {timeout:g} s; retry with a longer --timeout"
        if not progress.headful:
            message += f", or run once with `{headful_command(recipe)}` to see the page"
    return ChallengeTimeout(message, provider=recipe.name, url=url, timeout=timeout)


def unreachable_error(recipe: Recipe, page: PageState) -> SiteUnreachableError:
    """The error for Chromium's own error page (``chrome-error://``): the site could not be reached."""
    code = net_error_in(page.html) or "ERR_FAILED"
    return SiteUnreachableError(
        f"cannot reach {recipe.start_url}: {describe_net_error(code)}",
        provider=recipe.name,
        url=recipe.start_url,
        reason=code,
    )


def needs_headful(recipe: Recipe, reason: str) -> NeedsHeadfulError:
    """The error for a page only a person can get past (an interactive challenge, or a login)."""
    what = "an interactive challenge" if reason == "interactive" else "a login"
    return NeedsHeadfulError(
        f"{recipe.start_url} needs {what} that only a person can do; run once with `{headful_command(recipe)}`",
        provider=recipe.name,
        url=recipe.start_url,
        reason=reason,
    )


def headful_command(recipe: Recipe) -> str:
    """The command that harvests ``recipe`` with a visible browser."""
    return f"harvest --provider {recipe.name} --headful"
