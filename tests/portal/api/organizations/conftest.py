from tests.portal.organizations.conftest import (  # noqa: F401 - fixtures
    _stripe_server,
    org_stripe,
    org_usage,
    shared_team,
    team,
)
