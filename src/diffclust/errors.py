"""User-facing errors: each says what was wrong and what to do about it."""


class DiffclustError(ValueError):
    """A problem with the user's input or settings (not a bug in diffclust)."""


class BackboneNotFoundError(DiffclustError):
    """A backbone name, folder or hub id could not be loaded."""
