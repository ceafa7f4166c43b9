from tests.portal.organizations.conftest import org_usage, team  # noqa: F401 - fixtures
