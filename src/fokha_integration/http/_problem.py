"""Problem details (RFC 9457) responses: the one shape every HTTP error of this package has.

``{"type", "title", "status", "detail", ...extensions}`` sent as
``application/problem+json``. ``type`` is a stable URI naming the problem (a
relative ``/problems/<code>`` reference, documented in ``docs/http.md``), so clients
switch on it rather than on the human ``title``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["PROBLEM_CONTENT_TYPE", "problem", "problem_body"]

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(status: int, code: str, title: str, detail: str = "", **extra: Any) -> bytes:
    """The JSON bytes of one problem document."""
    doc: dict[str, Any] = {"type": f"/problems/{code}", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def problem(
    status: int,
    code: str,
    title: str,
    detail: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An aiohttp response carrying one problem document."""
    from aiohttp import web

    return web.Response(
        status=status,
        body=problem_body(status, code, title, detail, **extra),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
