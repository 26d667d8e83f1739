"""SCIM filter expressions with escaped values (RFC 7644 section 3.4.2.2).

A filter value is a JSON string literal: quotes and backslashes are escaped,
so a name like ``O'Brien "Bob" or 1 eq 1`` matches exactly that name and can
neither break the filter nor widen it.
"""

from __future__ import annotations

import json
import re

_ATTRIBUTE_PATH = re.compile(r"(urn:[A-Za-z0-9.:_-]+:)?[A-Za-z][A-Za-z0-9_$-]*(\.[A-Za-z][A-Za-z0-9_$-]*)?")


def scim_string(value: str) -> str:
    """``value`` as a SCIM (JSON) string literal, quotes included."""
    return json.dumps(value, ensure_ascii=False)


def eq_filter(attribute: str, value: str) -> str:
    """``attribute eq "value"``; the attribute path is checked, the value escaped."""
    if not _ATTRIBUTE_PATH.fullmatch(attribute):
        raise ValueError(f"not a SCIM attribute path: {attribute!r}")
    return f"{attribute} eq {scim_string(value)}"
