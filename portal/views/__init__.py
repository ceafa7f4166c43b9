"""The portal's pages, one module per area. Each view parses a form, calls a selector or a
service of ``accounts`` or ``billing``, and renders; no business rule lives here."""
