"""Errors a user can cause. The CLI prints them as one line and exits non-zero, never a traceback."""


class CnnkitError(ValueError):
    """A bad value given by the user: names the value and what is allowed instead."""


class ArtifactError(CnnkitError):
    """An exported artifact that is missing, or that its runtime cannot load (a damaged or truncated file)."""


class UnknownOptionError(CnnkitError):
    """A model builder does not take an option; ``options`` names them."""

    def __init__(self, message, options):
        super().__init__(message)
        self.options = tuple(options)


class UnknownModelError(CnnkitError):
    """A model name that is not in the registry."""

    def __init__(self, name, suggestions):
        self.name = name
        self.suggestions = list(suggestions)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown model {name!r}{hint} (`cnnkit models` lists all)")
