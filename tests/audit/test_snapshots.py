"""What the trail keeps of two snapshots: changed fields only, secrets as words."""

from __future__ import annotations

from decimal import Decimal

from audit.snapshots import shown_changes, snapshot
from billing.models import ModelPrice


def test_a_creation_shows_every_field_and_a_secret_only_as_set_or_not_set():
    before, after = shown_changes(None, {"name": "up", "api_key_encrypted": "gAAAA-cipher",
                                         "password": ""})
    assert before is None
    assert after == {"name": "up", "api_key_encrypted": "set", "password": "not set"}


def test_a_deletion_shows_every_field_it_had():
    assert shown_changes({"name": "up", "digest": "ab12"}, None) == (
        {"name": "up", "digest": "set"}, None)


def test_a_change_shows_only_the_fields_that_changed():
    before, after = shown_changes({"name": "up", "priority": 0, "enabled": True},
                                  {"name": "up", "priority": 5, "enabled": True})
    assert (before, after) == ({"priority": 0}, {"priority": 5})


def test_a_replaced_secret_shows_as_changed_and_a_removed_one_as_removed():
    assert shown_changes({"api_key_encrypted": "old-cipher"},
                         {"api_key_encrypted": "new-cipher"}) == (
        {"api_key_encrypted": "set"}, {"api_key_encrypted": "changed"})
    assert shown_changes({"api_key_encrypted": "old-cipher"}, {"api_key_encrypted": ""}) == (
        {"api_key_encrypted": "set"}, {"api_key_encrypted": "removed"})
    assert shown_changes({"api_key_encrypted": ""}, {"api_key_encrypted": "new-cipher"}) == (
        {"api_key_encrypted": "not set"}, {"api_key_encrypted": "set"})


def test_a_kept_secret_is_no_change():
    assert shown_changes({"digest": "ab12", "name": "a"}, {"digest": "ab12", "name": "a"}) == (
        {}, {})


def test_a_price_typed_with_fewer_decimals_than_the_column_keeps_is_the_same_price():
    typed = ModelPrice(model="m", input_usd_per_mtok=Decimal("1"),
                       output_usd_per_mtok=Decimal("2.50"))
    stored = ModelPrice(model="m", input_usd_per_mtok=Decimal("1.000000"),
                        output_usd_per_mtok=Decimal("2.500000"))
    fields = ("model", "input_usd_per_mtok", "output_usd_per_mtok")
    assert snapshot(typed, fields=fields) == snapshot(stored, fields=fields) == {
        "model": "m", "input_usd_per_mtok": "1", "output_usd_per_mtok": "2.5"}
