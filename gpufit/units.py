"""Byte and size units, and reading sizes a person writes (2GiB, 1.5 GB, 512MiB).

Memory is int bytes everywhere in gpufit; GiB (2**30) and GB (10**9) strings exist only in render/.
"""

from __future__ import annotations

import re

from .errors import UsageError

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
GB = 10**9

SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b?|b)?\s*$", re.I | re.ASCII)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30, "t": 10**12,
          "tb": 10**12, "tib": 2**40, "ti": 2**40}
MAX_SIZE = 2**60  # 1 EiB: more than any host or GPU memory; a larger size is a typo or a missing unit


def parse_size(text: str, option: str) -> int:
    """'2GiB' / '1.5 GB' / '512MiB' / '1073741824' -> bytes. Bare numbers are bytes. ASCII digits only;
    an empty value, a unit gpufit does not know or a size above 1 EiB is a UsageError naming the option."""
    shown = text if len(str(text)) <= 40 else f"{str(text)[:37]}..."
    m = SIZE_RE.match(str(text))
    if not m:
        what = "an empty value" if not str(text).strip() else f"cannot read size {shown!r}"
        raise UsageError(f"{option}: {what}; write e.g. 2GiB, 1.5GB or 512MiB")
    whole, _, frac = m.group(1).partition(".")
    frac = frac[:30]  # digits past a 30th decimal cannot change a byte count below 1 EiB
    unit = _UNITS[(m.group(2) or "").lower()]
    # exact integer arithmetic (no float rounding, no overflow): whole.frac x unit, rounded down
    n = (int(whole) * 10 ** len(frac) + int(frac or 0)) * unit // 10 ** len(frac) \
        if len(whole.lstrip("0")) <= 30 else MAX_SIZE + 1
    if n > MAX_SIZE:
        raise UsageError(f"{option} {shown}: larger than 1 EiB, more than any GPU or host has")
    return n


