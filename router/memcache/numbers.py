"""memcached's numbers, read as memcached 1.6 reads them (util.c: safe_strtoul,
safe_strtol, safe_strtoull over the C library's strtoul/strtol/strtoull, 64-bit longs),
for every command of the text and meta protocols.

A token is a number when it is an optional sign and decimal digits, nothing else. The C
functions then decide what it is worth: a value past 64 bits is refused (ERANGE); an
unsigned read of a negative number is refused unless its wrapped value is small enough to
look positive; and the 32-bit reads keep the low 32 bits of what was read, as the C
assignment to a 32-bit variable does (flags 4294967297 is 1, as memcached stores it).
Each function answers None where memcached answers a bad number.
"""

from __future__ import annotations

_U64 = 1 << 64
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_DIGITS = frozenset(b"0123456789")


def _read(token: bytes) -> int | None:
    """The signed value of ``[+-]digits``, or None for anything else."""
    digits = token[1:] if token[:1] in (b"+", b"-") else token
    if not digits or not _DIGITS.issuperset(digits):
        return None
    value = int(digits)
    return -value if token[:1] == b"-" else value


def strtoull(token: bytes) -> int | None:
    """safe_strtoull: a 64-bit unsigned number (CAS uniques, incr/decr deltas)."""
    value = _read(token)
    if value is None or abs(value) >= _U64:
        return None  # ERANGE
    if value < 0:
        value += _U64  # strtoull negates in unsigned arithmetic
        if value > _I64_MAX:
            return None  # "negative as a signed number" and the token holds a '-'
    return value


def strtoul32(token: bytes) -> int | None:
    """safe_strtoul into a uint32_t: flags, verbosity levels, memory limits."""
    value = strtoull(token)  # unsigned long is 64 bits here
    return None if value is None else value & 0xFFFFFFFF


def strtol32(token: bytes) -> int | None:
    """safe_strtol into an int32_t: exptimes, byte counts, delays."""
    value = _read(token)
    if value is None or not _I64_MIN <= value <= _I64_MAX:
        return None  # ERANGE
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
