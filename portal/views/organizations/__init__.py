"""The organization pages: the switcher, creating one, and each organization's overview,
members, invitations, keys, budgets, usage and billing (its card top-ups, auto top-up,
receipts, billing details and statements included). Every view goes through
``access.org_page``, which answers 404 to non-members and 403 to roles not allowed."""
