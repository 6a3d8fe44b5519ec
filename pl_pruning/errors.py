"""One exception type for bad input that a user can fix.

``PlPruningError`` means *bad input*: a value, a file or a setup the user chose and can
change (the message names it and, where there is a list, what is allowed). The command
line prints it as one line and exits with status 2. A failure of the program itself
raises an ordinary exception (``RuntimeError``, ``AssertionError``, ...), which keeps its
traceback everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


class PlPruningError(ValueError):
    """Bad input: the message names the bad value and what is allowed."""


def choice_error(what: str, value: object, choices: Iterable[object]) -> PlPruningError:
    """Build the error for a value that is not one of ``choices``."""
    listed = ", ".join(str(c) for c in choices)
    return PlPruningError(f"unknown {what} {value!r}; choose one of: {listed}")


def named_by_key(err: PlPruningError, prefix: str, keys: Iterable[str] | Mapping[str, str]) -> PlPruningError:
    """``err`` with the argument it names spelt as the user's full key (``fraction`` ->
    ``pruning.freeze.fraction``), for errors raised by a constructor that knows only its
    own argument names. The argument is found where the validators put it: first in the
    message (``fraction must be ...``, ``unknown criterion ...``), as ``name=`` or in
    backticks (Lightning's ``Trainer(devices=0)``); a message naming none of ``keys`` is
    prefixed with ``prefix``. ``keys`` may map the name a message uses to the user's key
    under ``prefix`` (``{"max_epochs": "fit.max_epochs"}``)."""
    message = str(err)
    if re.match(r"(?:unknown )?[A-Za-z_]\w*\.\w", message):  # already a full key
        return err
    rename = dict(keys) if isinstance(keys, Mapping) else {k: k for k in keys}
    hits = []  # (where, key, how): the key mentioned first wins
    for key in rename:
        k = re.escape(key)
        for how, pattern in (("tick", rf"`\w*\(?({k})\b"), ("word", rf"^(?:unknown )?({k})\b"),
                             ("word", rf"\b({k})=")):
            hit = re.search(pattern, message)
            if hit:
                hits.append((hit.start(1), -len(key), how, hit))
                break
    if not hits:
        return PlPruningError(f"{prefix}: {message}")
    _, _, how, hit = min(hits, key=lambda h: h[:2])
    key = rename[hit[1]]
    if how == "tick":  # Lightning's style: `Trainer(devices=0)` ...
        return PlPruningError(f"{prefix}.{key}: {message}")
    return PlPruningError(f"{message[:hit.start(1)]}{prefix}.{key}{message[hit.end(1):]}")
