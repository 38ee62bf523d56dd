"""The one error type decoders raise."""


class DecodeError(ValueError):
    """A record that cannot be decoded; `reason` is a short, stable, countable phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
