"""The self-service API of organizations, under /api/orgs: the same as the portal's
organization pages, scoped by the caller's role. An organization the caller is not in, or
an object of another organization, is a 404 like an id that never existed; an action the
caller's role forbids inside their own organization is a 403 saying so."""
