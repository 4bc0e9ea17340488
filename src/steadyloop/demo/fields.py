"""Field types for the demo's request bodies: what JSON Schema says is what the server takes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = ["JsonInt", "Text"]


def _encodable(value: str) -> str:
    # JSON can carry lone surrogates ("\\ud800"), which no database can store as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


#: Text a database can store: valid UTF-8 and without NUL (PostgreSQL refuses it).
Text = Annotated[str, Field(pattern=r"^[^\x00]*$"), AfterValidator(_encodable)]


def _json_number(value: object) -> object:
    # Lax pydantic takes `true` as 1 and `"3"` as 3; JSON Schema's "integer" is a JSON number
    # with no fraction (3 or 3.0) and nothing else.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    return value


#: An integer as JSON Schema means it: `3` and `3.0` are, `true`, `"3"` and `3.5` are not.
JsonInt = Annotated[int, BeforeValidator(_json_number)]
