"""The one exception type that the CLI turns into a one-line message."""


class ClipsearchError(Exception):
    """A problem the user can act on; its message is shown as it is, without a traceback."""


class LibraryBusy(ClipsearchError):
    """Another process holds the library's write lock."""
