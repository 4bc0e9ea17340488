"""Showing URLs without their credentials (logs, health output, the dashboard)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact_url"]


#: Query parameters whose value is a credential (compared lower-cased, `-` as `_`).
_SECRET_PARAMETERS = frozenset(
    {"key", "pass", "pwd", "auth", "authorization", "sig", "session", "credential"}
    | {"apikey", "accesskey", "secretkey", "privatekey", "sslkey"}
)
_SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "credentials", "signature", "_key")


def _is_secret_parameter(name: str) -> bool:
    # "_key" as a suffix, not "key": `monkey=` or `sortkey=`-like names are not credentials.
    name = name.strip().lower().replace("-", "_")
    return name in _SECRET_PARAMETERS or name.endswith(_SECRET_SUFFIXES)


def redact_url(url: str) -> str:
    """The URL without its credentials, for logs and health output.

    `postgresql://user:secret@host/db?sslpassword=x&application_name=a` ->
    `postgresql://user:***@host/db?sslpassword=***&application_name=a`: the password in the
    authority and the value of every query parameter named like a secret (password, token,
    secret, key, api_key, access_token...) are replaced by `***`; the rest is kept as it is.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show nothing of it
        return "***"
    netloc = parts.netloc
    if password is not None:
        netloc = netloc.replace(f":{password}@", ":***@", 1)
    query = "&".join(_redact_parameter(pair) for pair in parts.query.split("&"))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_parameter(pair: str) -> str:
    name, sep, value = pair.partition("=")
    if sep and value and _is_secret_parameter(unquote(name)):
        return f"{name}=***"
    return pair
