"""The one exception type ganbench raises for problems a user can fix.

The CLI turns it into a single line on stderr and exit status 2, so a bad input
never ends in a traceback. Library callers catch it as a ``ValueError``.
"""


class GanbenchError(ValueError):
    """A problem with the user's input or files, with a message that says how to fix it."""
