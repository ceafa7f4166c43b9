"""Every organization page against every role: allowed, 403 inside one's own organization,
404 for anyone outside it (see ``role_table``)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import resolve

from portal.views.organizations.urls import organization_urlpatterns
from tests.portal.organizations.conftest import signed_in
from tests.portal.organizations.role_table import FOREIGN_PAGES, OWNER, PAGES, case_id, cases

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("org_stripe")]


@pytest.fixture
def team(shared_team):
    # Seeded once for the module: each case rolls back what it did.
    return shared_team


@pytest.mark.parametrize(("case", "role"), cases(PAGES), ids=case_id)
def test_each_page_answers_each_role_as_the_table_says(team, case, role):
    path, data = case.fill(team.placeholders(role))
    client = signed_in(team.users[role])

    response = getattr(client, case.method)(path, data or {})

    assert response.status_code == case.expected(role), response.content.decode()[:500]
    errors = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "error"]
    if "leave" in case.name and role == OWNER:
        assert "keeps at least one owner" in errors[0]  # the only owner cannot go
    else:
        assert not errors  # a redirect that did what it was asked
    if response.status_code == 403:  # a page that says why, inside the organization's tabs
        page = response.content.decode()
        assert 'data-testid="forbidden"' in page
        assert 'data-testid="organization-name">Acme<' in page


def test_the_table_covers_every_organization_page():
    # Not per organization: creating one, the switcher and the invitation link.
    unscoped = {"org_new", "org_switch", "invitation_accept"}
    named = {pattern.name for pattern in organization_urlpatterns} - unscoped
    covered = {resolve(case.fill({k: 1 for k in _NAMES})[0].split("?")[0]).url_name
               for case in PAGES}
    assert named == covered


_NAMES = ("org", "other_org", "target", "me", "my_key", "target_key", "service_key",
          "foreign_key", "invitation", "foreign_invitation", "outsider", "voucher", "name",
          "receipt", "foreign_receipt", "personal_receipt")


def test_a_signed_out_visitor_is_sent_to_sign_in(client, team):
    response = client.get(f"/orgs/{team.organization.pk}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("case", FOREIGN_PAGES, ids=case_id)
def test_another_organizations_objects_are_404_even_to_an_owner(team, case):
    path, data = case.fill(team.placeholders(OWNER))

    response = getattr(signed_in(team.users[OWNER]), case.method)(path, data or {})

    assert response.status_code == 404
