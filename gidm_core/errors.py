"""One base class for every error a user can fix, so each front end catches one thing.

The CLI prints a `UserError` as one line with exit code 2; the app shows it at the control or in the status line.
Anything else is a bug and keeps its traceback. This module imports nothing from the package (no import cycles).
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input the user can fix; the message is one line meant for them."""


class UsageError(UserError):
    """A command-line flag or combination of flags that cannot work."""


def out_of_memory(err: BaseException) -> bool:
    """True for the allocation failures torch and Python raise when a run is too large for this machine."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_message(size: int | str, batch: int) -> str:
    """The one line shown for an out-of-memory run: it names the size, which is what the user can change."""
    return (f"out of memory at image size {size} px with a batch of {batch}: double backward through the UNet "
            f"needs memory that grows with pixels x batch; try a smaller size or batch")
