"""Errors the backend reports to people: one clear message naming the file or value."""


class FacecapError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class HeadModelError(FacecapError):
    """A head-model file or parameter is not what was expected."""


class UnsafePickleError(HeadModelError):
    """A pickle asked to run code or build an object the loader does not admit."""


class FitError(FacecapError):
    """The fitter was given inputs it cannot use, or the solve failed."""
