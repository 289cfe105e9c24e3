"""The one exception type for mistakes a user can make (bad flag, missing file, wrong CSV)."""


class KtError(Exception):
    """A user-caused error. The CLI prints its message on one line and exits 2; no traceback.

    The message names the file or flag at fault and says how to fix it.
    """
