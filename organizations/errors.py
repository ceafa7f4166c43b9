class OrganizationError(Exception):
    """A change to an organization that cannot be made; the message says why."""


class NotAllowed(OrganizationError):
    """The actor's role does not allow it (or they are not a member: the portal and the API
    answer 404 then, so that an organization's existence cannot be probed)."""


class LastOwner(OrganizationError):
    """The change would leave the organization without an owner."""


class InvitationInvalid(OrganizationError):
    """The link is not one of ours, expired, used, revoked, or for another address."""
