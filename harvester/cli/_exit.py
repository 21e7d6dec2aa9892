"""Exit codes of the ``harvest`` command, named so callers and tests share one meaning."""

from __future__ import annotations

OK = 0
NOT_FOUND = 1  # a record (or provider) that does not exist; an expired record with --fresh
USAGE = 2  # click's own code for bad flags and arguments
CACHE_ERROR = 3  # corrupt file, wrong key, lock timeout
CHALLENGE_TIMEOUT = 4  # the challenge did not clear before --timeout
BLOCKED = 5  # the site answered "Access denied"
BROWSER_FAILED = 6  # Chromium missing, crashed or unreachable over CDP
NEEDS_HEADFUL = 7  # an interactive challenge or a login: run once with --headful
PROVIDER_ERROR = 8  # a provider API call failed (chat, models, image)
SITE_UNREACHABLE = 9  # the site could not be reached at all (connection refused, DNS failure, unsafe port)
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in harvest; the traceback goes to stderr (please report it)
INTERRUPTED = 130  # SIGINT, as shells report it


class Interrupted(BaseException):
    """Ctrl-C reached a command: exit ``INTERRUPTED`` quietly.

    A ``BaseException`` other than ``KeyboardInterrupt``, so that click lets it through instead of printing
    "Aborted!" and exiting 1.
    """
