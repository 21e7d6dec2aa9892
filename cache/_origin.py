"""Origins as records, recipes and clients spell them: the one normaliser for ``HARVEST_<PROVIDER>_BASE_URL``.

Shared by ``harvester`` (where a session is harvested) and ``providers`` (where its API is called), so both
read the same variable and rebase onto the same origin. Standard library only: both import it on hot paths.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def normalize_origin(value: str) -> str:
    """``http://host:port/any/path`` -> ``http://host:port`` (a bare ``host:port`` gets ``https://``).

    Raises:
        ValueError: not an http(s) origin.
    """
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) origin")
    return urlunsplit((parts.scheme.lower(), parts.netloc, "", "", "")).rstrip("/")


def base_url_variable(provider: str) -> str:
    """The environment variable that rebases ``provider``: ``HARVEST_<PROVIDER>_BASE_URL``, every character
    that is not a letter or digit (``-``, ``.``) spelled ``_``."""
    return "HARVEST_" + "".join(c if c.isalnum() else "_" for c in provider.upper()) + "_BASE_URL"
