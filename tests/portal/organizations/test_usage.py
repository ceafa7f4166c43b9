"""An organization's usage in the portal: members see only their own requests, roles that
see all usage see every member's (and may narrow to one); the CSV cannot carry a
spreadsheet formula."""

from __future__ import annotations

import csv
import io
import re

import pytest

from organizations.services import organization_key_create
from tests.portal.conftest import money_html
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _request_rows(page: str) -> set[str]:
    return set(re.findall(r'data-request="([^"]+)"', page))


def _csv(response) -> list[dict[str, str]]:
    body = b"".join(response).decode()  # the test client reads the async stream
    return list(csv.DictReader(io.StringIO(body)))


def test_a_member_sees_only_their_own_rows_sums_and_chart(team):
    page = signed_in(team.users["member"]).get(
        f"/orgs/{team.organization.pk}/usage/").content.decode()

    [own] = team.users["member"].usage_records.values_list("request_id", flat=True)
    assert _request_rows(page) == {own}
    assert "Your requests only." in page
    assert 'data-testid="by-member-table"' not in page
    assert 'name="member"' not in page  # no other member to pick
    assert f"1 request, 150 tokens, {money_html(2_000)}" in page
    assert 'data-testid="spend-chart"' in page
    assert 'data-testid="tokens-chart"' in page
    assert "target@example.com" not in page


def test_a_member_asking_for_another_members_usage_is_refused(team):
    client = signed_in(team.users["member"])
    path = f"/orgs/{team.organization.pk}/usage"

    assert client.get(f"{path}/?member={team.users['target'].pk}").status_code == 403
    assert client.get(f"{path}.csv?member={team.users['target'].pk}").status_code == 403
    # Their own id is fine: it is what they see anyway.
    assert client.get(f"{path}/?member={team.users['member'].pk}").status_code == 200


@pytest.mark.parametrize("role", ["owner", "admin", "billing"])
def test_roles_that_see_all_usage_see_every_members_rows_by_member_key_and_model(team, role):
    page = signed_in(team.users[role]).get(
        f"/orgs/{team.organization.pk}/usage/").content.decode()

    assert len(_request_rows(page)) == 3  # member, target, service key; not Other Co's
    by_member = page[page.index('data-testid="by-member-table"'):]
    by_member = by_member[:by_member.index("</table>")]
    assert "member@example.com" in by_member
    assert "target@example.com" in by_member
    assert team.keys["service"].prefix in page
    assert 'data-testid="by-model-table"' in page
    assert "<code>test-model</code>" in page
    assert f"3 requests, 450 tokens, {money_html(6_000)}" in page


def test_an_admin_narrows_to_one_member(team):
    target = team.users["target"]
    page = signed_in(team.users["admin"]).get(
        f"/orgs/{team.organization.pk}/usage/?member={target.pk}").content.decode()

    assert _request_rows(page) == set(target.usage_records.values_list("request_id",
                                                                       flat=True))
    assert "Requests of target@example.com." in page


def test_the_csv_gives_members_their_own_rows_only(team):
    rows = _csv(signed_in(team.users["member"]).get(f"/orgs/{team.organization.pk}/usage.csv"))

    assert {row["member"] for row in rows} == {"member@example.com"}
    assert [row["cost_usd"] for row in rows] == ["0.002000"]


def test_the_csv_guards_against_spreadsheet_formulas(team, org_usage):
    key = organization_key_create(organization=team.organization, actor=team.users["member"],
                                  name='=HYPERLINK("http://evil.example","x")').api_key
    org_usage(key, model="@SUM(A1)")

    response = signed_in(team.users["admin"]).get(f"/orgs/{team.organization.pk}/usage.csv")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Cache-Control"] == "private, no-store"
    [row] = [row for row in _csv(response) if row["api_key"] == key.prefix]
    assert row["api_key_name"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert row["model"] == "'@SUM(A1)"
