"""Errors that are the user's to fix: bad input, missing data, unreachable storage."""


class MtgError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The message names the file, field or value at fault and, where there is one, what to do.
    """


def describe(err: BaseException) -> str:
    """An exception and the exceptions it was raised from, in one line: ``Type: message; cause; ...``.

    GDAL and rasterio say "See previous exception for details" and keep the file name and the reason in the chained
    exceptions; this walks ``__cause__``/``__context__`` and keeps each distinct message once.
    """
    seen: list[str] = []
    current: BaseException | None = err
    while current is not None and len(seen) < 8:
        text = " ".join(str(current).split()).replace(" See previous exception for details.", "")
        if text and not any(text in s for s in seen):
            seen.append(text)
        current = current.__cause__ or current.__context__
    return f"{type(err).__name__}: {'; '.join(seen) or 'no message'}"
