"""Errors that cross the stage boundary and map onto HTTP statuses at the ingress."""


class InputError(ValueError):
    """A request field is out of range or malformed; the ingress answers 4xx with the message.

    Args:
        field: name of the offending request field (``prompt``, ``image``, ``seed``...).
        message: what was expected and what was got.
        status: HTTP status the ingress should answer with (400, 413, 415, 422).
    """

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple:
        # Ray re-raises a stage's exception in the ingress by unpickling it; the default
        # reduction would call __init__ with the formatted message only and fail.
        return type(self), (self.field, self.message, self.status)


class StageOutputError(RuntimeError):
    """A stage produced an unusable result (empty mesh, NaN field); never written as a file."""


class WeightsUnavailableError(RuntimeError):
    """Real weights are neither cached nor downloadable; names the repo and how to fetch it."""
