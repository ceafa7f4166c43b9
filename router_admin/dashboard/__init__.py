"""The admin's front page: revenue, margin and the fleet at a glance, from the roll-ups."""
