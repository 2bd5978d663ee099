"""Titles made from a message stay within their limit, ellipsis included (a long `/request` used to fail)."""

from __future__ import annotations

import pytest

from bot.requests.schemas import RequestCreate, title_from_text


@pytest.mark.parametrize("text", ["word " * 200, "x" * 1000, "short title", "- bullet first\nsecond line"])
@pytest.mark.parametrize("limit", [120, 255])
def test_a_title_never_exceeds_its_limit(text: str, limit: int) -> None:
    title = title_from_text(text, limit=limit)
    first = text.strip().splitlines()[0].strip().lstrip("-*• ")
    assert 0 < len(title) <= limit
    if len(first) <= limit:
        assert title == first
    else:
        assert title.endswith("…") and first.startswith(title[:-1])


def test_a_long_command_text_makes_a_valid_request() -> None:
    request = RequestCreate(
        team_id="T1",
        type_id=1,
        title=title_from_text("please " * 100, limit=255),
        requester_user_id="U1",
        channel_id="C1",
        source="command",
    )
    assert len(request.title) <= 255 and request.title.endswith("…")
