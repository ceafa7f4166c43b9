"""The OpenAPI schema and its docs page, which must work with no network."""

from __future__ import annotations

import html as html_text
import json
import re

from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient


def test_the_schema_generates_valid_openapi_without_a_single_warning(tmp_path):
    # Raises on any warning or on a schema that does not validate against OpenAPI 3.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file",
                 str(tmp_path / "schema.yaml"))

    assert "/api/keys/{key_id}" in (tmp_path / "schema.yaml").read_text()


def test_the_schema_describes_only_this_api_and_both_ways_in(db):
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert all(path.startswith("/api/") for path in document["paths"])
    assert {"/api/balance", "/api/keys", "/api/keys/{key_id}", "/api/usage",
            "/api/usage/daily", "/api/usage/models", "/api/vouchers/redeem", "/api/tokens",
            "/api/tokens/{token_id}"} <= set(document["paths"])
    schemes = document["components"]["securitySchemes"]
    assert schemes["managementToken"]["scheme"] == "bearer"
    assert document["paths"]["/api/tokens"]["post"]["security"] == [{"cookieAuth": []}]


def test_the_docs_page_loads_nothing_from_outside(db):
    page = APIClient().get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the page should load Swagger UI"
    assert all(asset.startswith("/static/") for asset in assets), assets
    # ... and each is a file we ship (the sidecar package), so the page works offline.
    assert all(finders.find(asset.removeprefix("/static/")) for asset in assets), assets
    assert "cdn" not in html.lower()
    assert not re.search(r"https?://", html)
    # Swagger UI's settings reach its start-up script (a static file) as a data attribute.
    settings = re.search(r'data-settings="([^"]*)"', html).group(1)
    assert json.loads(html_text.unescape(settings))["validatorUrl"] is None
