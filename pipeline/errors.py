"""Errors that are the user's to fix: bad input, missing data, unreachable storage."""

from __future__ import annotations


class MtgError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The message names the file, field or value at fault and, where there is one, what to do.
    """


def exception_chain(err: BaseException, limit: int = 8) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``, else ``__context__``), outermost first.

    Parameters
    ----------
    err : BaseException
        The exception caught.
    limit : int
        Most exceptions returned (chains can be long, or cyclic through ``__context__``).
    """
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(chain) < limit and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(text.split())


def describe(err: BaseException) -> str:
    """An exception and the exceptions it was raised from, in one line: ``Type: message; cause; ...``.

    GDAL and rasterio say "See previous exception for details" and keep the file name and the reason in the chained
    exceptions; this walks ``__cause__``/``__context__`` and keeps each distinct message once.
    """
    seen: list[str] = []
    for current in exception_chain(err):
        text = one_line(str(current)).replace(" See previous exception for details.", "")
        if text and not any(text in s for s in seen):
            seen.append(text)
    return f"{type(err).__name__}: {'; '.join(seen) or 'no message'}"
