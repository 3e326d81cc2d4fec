"""Old spellings of arguments: a clear error that names the new one (no silent aliasing).

The 0.2 redesign moved families of settings into configuration objects and renamed a few
arguments (one name per concept). A call that still uses an old keyword gets a
``TypeError`` that says what to write instead, rather than Python's bare "unexpected keyword
argument".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["moved", "moved_into"]

F = TypeVar("F", bound=Callable[..., Any])


def moved(**spellings: str) -> Callable[[F], F]:
    """Decorate a function so that old keyword arguments raise a ``TypeError`` naming the new.

    Parameters
    ----------
    **spellings
        ``old_name="how to write it now"``.

    Returns
    -------
    callable
        The decorator.

    Examples
    --------
    >>> @moved(loader="data=")
    ... def f(data=None):
    ...     return data
    >>> f(loader=[1])
    Traceback (most recent call last):
    ...
    TypeError: f(): loader= is now spelled data= (landscape 0.2).
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            old = [name for name in kwargs if name in spellings]
            if old:
                name = getattr(function, "__qualname__", function.__name__).replace(".__init__", "")
                parts = "; ".join(f"{o}= is now spelled {spellings[o]}" for o in old)
                raise TypeError(f"{name}(): {parts} (landscape 0.2).")
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def moved_into(settings: str, prefix: str, *fields: str) -> dict[str, str]:
    """Return the spellings of old keywords ``prefix + field`` that became settings fields.

    Parameters
    ----------
    settings : str
        How the settings object is passed now, e.g. ``"hessian=ls.HessianSettings"``.
    prefix : str
        What the old keywords had before the field's name (``""``: the same name).
    *fields
        The fields.

    Returns
    -------
    dict of str to str
        ``{old_name: "how to write it now"}``, for :func:`moved`.

    Examples
    --------
    >>> moved_into("verify=ls.VerifySettings", "verify_", "steps")
    {'verify_steps': 'verify=ls.VerifySettings(steps=...)'}
    """
    return {prefix + field: f"{settings}({field}=...)" for field in fields}
