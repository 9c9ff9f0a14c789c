"""One error family for user mistakes: the CLI prints the sentence and exits 2."""


class DatamodelsError(ValueError):
    """A user-facing error: its message is one sentence naming the field and value."""


class SpecError(DatamodelsError):
    """The experiment spec is missing, malformed or inconsistent."""


class StoreError(DatamodelsError):
    """The store does not exist, does not match the spec, or would be overwritten."""
