"""An element's local name and namespace read from its tag, without building an `etree.QName`.

lxml's QName checks a name with `b":" in name`, which CPython answers by first trying the name
as an integer and formatting, then discarding, the TypeError that raises: ~2,000 instructions
(callgrind) for what is a string split. The intake took ~44 of them per filing. Tags are as lxml
gives them: `{namespace}local`, or `local` without a namespace.
"""

from __future__ import annotations

__all__ = ["local_name", "namespace_of"]


def local_name(tag: str) -> str:
    """`local` of `{namespace}local` or of `local` (what `etree.QName(tag).localname` gives)."""
    return tag.rpartition("}")[2]


def namespace_of(tag: str) -> str | None:
    """`namespace` of `{namespace}local`; None without one (`etree.QName(tag).namespace`)."""
    return tag[1:tag.index("}")] if tag[:1] == "{" else None
