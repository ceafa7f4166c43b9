"""The site has an icon: linked from the portal's and the admin's pages, and at /favicon.ico,
where browsers and tools look for one by name."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

ICON_LINKS = ('<link rel="icon" href="/favicon.ico" sizes="32x32">',
              '<link rel="icon" href="/static/router_admin/favicon.svg" type="image/svg+xml">')


def test_favicon_ico_answers_with_an_icon(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    body = b"".join(response.streaming_content)
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file's header


@pytest.mark.parametrize("page", ["/login/", "/admin/login/"])
def test_the_portal_and_the_admin_link_the_icon(client, page):
    html = client.get(page).content.decode()

    for link in ICON_LINKS:
        assert link in html


def test_the_linked_svg_icon_is_a_static_file():
    path = finders.find("router_admin/favicon.svg")

    assert path is not None
    with open(path) as svg:
        assert svg.read().startswith("<svg ")
