"""The one exception type for failures a user can act on."""


class MediaPulseError(Exception):
    """An expected failure: the message names the thing that is wrong and the fix.

    The CLI prints it on one line and exits with ``exit_code``; anything else that
    escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
