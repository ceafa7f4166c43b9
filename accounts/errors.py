class AccountsError(Exception):
    """A request about users or keys that cannot be carried out; the message says why."""


class UserAlreadyExists(AccountsError):
    pass


class UserNotFound(AccountsError):
    pass


class ApiKeyNotFound(AccountsError):
    pass


class ManagementTokenNotFound(AccountsError):
    pass
