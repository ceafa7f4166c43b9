"""The admin theme's cells (router_admin.admin_display) and production's minified scripts
(router_admin.static_storage)."""

from __future__ import annotations

import json
from pathlib import Path

import django
from django.conf import settings

from router_admin.admin_display import short_id, usd, usd_cell
from router_admin.static_storage import minify_js, should_minify

ROOT = Path(settings.BASE_DIR)
ADMIN_STATIC = Path(django.__file__).parent / "contrib" / "admin" / "static"


def test_money_is_one_format_with_the_exact_micros_on_hover():
    assert usd(12_345_678) == "$12.345678"
    assert usd(-100) == "-$0.000100"
    assert usd(0) == "$0.000000"
    assert usd_cell(1_234_567_891) == (
        '<span class="router-money" title="1,234,567,891 micro-USD">$1234.567891</span>')
    assert 'class="router-money negative"' in usd_cell(-5)
    # Unknown (an upstream cost never priced) is a dash, never $0.
    assert "$" not in usd_cell(None)
    assert "unknown" in usd_cell(None)


def test_a_long_id_is_shortened_with_the_whole_value_in_the_title():
    value = "chatcmpl-0123456789abcdef0123456789abcdef"
    assert short_id(value) == (
        f'<span class="router-id" title="{value}">chatcmpl-012\u2026</span>')
    assert short_id("req_1", keep=12) == '<span class="router-id">req_1</span>'
    assert short_id('<b>"x"</b>' * 3).count("<b>") == 0  # escaped, in the text and the title


def test_only_unminified_scripts_are_minified():
    assert should_minify("admin/js/core.js")
    assert should_minify("admin/js/core.7e257fdf56dc.js")
    assert not should_minify("admin/js/vendor/jquery/jquery.min.js")
    assert not should_minify("admin/js/vendor/jquery/jquery.min.2c872dbe60f4.js")
    assert not should_minify("admin/css/base.css")
    source = ("/*! licence */\n// a comment\n"
              "function add(first, second) {\n    return first + second;\n}\n")
    assert minify_js(source) == "/*! licence */function add(first,second){return first+second;}"


def test_collectstatic_in_production_writes_the_admin_scripts_minified_and_compressed(
    collected_static,
):
    tmp_path = collected_static
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    for name in ("admin/js/core.js", "admin/js/actions.js", "admin/js/urlify.js"):
        served = tmp_path / manifest[name]
        assert served.stat().st_size < 0.8 * (ADMIN_STATIC / name).stat().st_size, name
        assert "\n    " not in served.read_text(), f"{name} is still indented"
        assert (tmp_path / f"{manifest[name]}.gz").exists()
    # Scripts minified upstream are copied as they are.
    jquery = "admin/js/vendor/jquery/jquery.min.js"
    assert (tmp_path / manifest[jquery]).read_bytes() == (ADMIN_STATIC / jquery).read_bytes()
    # And the theme's stylesheet is collected for the pages that link it.
    assert "router_admin/theme.css" in manifest
