"""Bad input named by the user's full key: a constructor knows only its own argument names
(``fraction``), the config tree knows where its node sits (``pruning.freeze``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pl_pruning.errors import PlPruningError, named_by_key

__all__ = ["keyed"]


@contextlib.contextmanager
def keyed(node: Any, keys: Iterable[str] | Mapping[str, str] | None = None, *,
          only_these: bool = False) -> Iterator[None]:
    """Bad input raised inside the block names the user's full key: an argument of the
    object built from ``node`` (``fraction``) becomes ``pruning.freeze.fraction``.
    ``node`` is a config node (its place in the config tree gives the prefix, wherever a
    preset puts it) or the prefix itself; ``keys`` default to the node's own keys. With
    ``only_these``, an error naming none of ``keys`` passes unchanged."""
    try:
        yield
    except PlPruningError as err:
        prefix = node if isinstance(node, str) else node._get_full_key(None)
        names = keys if keys is not None else [str(k) for k in node]
        named = named_by_key(err, prefix, names)
        if only_these and str(named).startswith(f"{prefix}: "):
            raise
        raise named from None
