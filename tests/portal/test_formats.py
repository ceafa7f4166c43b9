"""The portal's one format for money, moments and keys (portal/templatetags/portal_tags.py),
as the filters render it and as a page shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.template import Context, Template

from portal.templatetags.portal_tags import key_label, last_used, usd, usd_html, when

NOW = datetime(2026, 12, 5, 16, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize(("micros", "text"), [
    (0, "$0.000000"), (12_500_000, "$12.500000"), (123, "$0.000123"),
    (1_000_001, "$1.000001"), (-2_500_000, "-$2.500000"), (None, "\u2014")])
def test_money_always_has_six_decimals_and_the_sign_before_the_dollar(micros, text) -> None:
    assert usd(micros) == text


def test_the_usd_filter_puts_the_exact_micro_usd_in_the_title() -> None:
    assert usd_html(12_345_678) == (
        '<span class="money" title="12,345,678 micro-USD">$12.345678</span>')
    assert usd_html(-100) == '<span class="money" title="-100 micro-USD">-$0.000100</span>'
    assert usd_html(None) == "\u2014"


def test_a_template_renders_the_filter_as_html_not_escaped_text() -> None:
    html = Template("{% load portal_tags %}{{ amount|usd }}").render(
        Context({"amount": 1_500_000}))
    assert html == '<span class="money" title="1,500,000 micro-USD">$1.500000</span>'


def test_a_moment_is_iso_with_its_zone_said_in_a_time_element() -> None:
    assert when(NOW) == ('<time datetime="2026-12-05T16:30:45+00:00" '
                         'title="2026-12-05T16:30:45+00:00">2026-12-05 16:30 UTC</time>')
    # Another zone's moment is shown in UTC, the zone the portal speaks.
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert ">2026-12-05 16:30 UTC</time>" in when(paris)
    assert when(None) == "\u2014"


@pytest.mark.parametrize(("seconds_ago", "text"), [
    (0, "just now"), (59, "just now"), (60, "1\xa0minute ago"),
    (2 * 3600 + 5, "2\xa0hours ago")])
def test_last_used_never_says_zero_minutes_ago(seconds_ago, text) -> None:
    html = last_used(NOW - timedelta(seconds=seconds_ago), NOW)
    assert f">{text}</time>" in html
    assert "0\xa0minutes" not in html
    assert 'title="2026-12-05 ' in html  # the moment itself on hover


def test_a_key_or_token_never_used_says_never() -> None:
    assert last_used(None) == "never"


class _Key:
    def __init__(self, prefix: str, name: str) -> None:
        self.prefix, self.name = prefix, name


def test_a_key_shows_its_name_beside_its_prefix_escaped() -> None:
    assert key_label(_Key("sk-br-ab12", "prod <eu>")) == (
        '<code>sk-br-ab12\u2026</code> <span class="key-name">prod &lt;eu&gt;</span>')
    assert key_label(_Key("sk-br-ab12", "")) == "<code>sk-br-ab12\u2026</code>"
    assert key_label(None) == "\u2014"


def test_pages_show_money_moments_and_key_names_in_the_one_format(
        member_client, member, make_key) -> None:
    from accounts.services import api_key_touch

    key = make_key(member, name="backend")
    api_key_touch(api_key=key)
    page = member_client.get("/keys/").content.decode()
    assert ">just now</time>" in page
    assert "UTC</time>" in page
    assert 'title="10,000,000 micro-USD">$10.000000<' in member_client.get("/").content.decode()
    edit = member_client.get(f"/keys/{key.pk}/").content.decode()
    assert f'<code>{key.prefix}\u2026</code> <span class="key-name">backend</span>' in edit
