"""RFC 1071 Internet checksum, computed with one big-integer reduction instead of a per-word loop.

The one's-complement sum of big-endian 16-bit words is congruent to ``int.from_bytes(data, "big")`` modulo 0xFFFF
because ``2**16 == 1 (mod 0xFFFF)``.  The folded one's-complement sum lies in ``1..0xFFFF`` for any non-zero input
(0xFFFF, not 0, represents a multiple of 0xFFFF) and is 0 only for all-zero input; the checksum is its complement.

Because every even-length chunk shifts later words by a multiple of 16 bits, the sum of a message made of an
even-length header followed by a payload equals ``int(header) + int(payload)`` modulo 0xFFFF, so callers can pass
the header (and pseudo-header) sum as ``initial`` and avoid concatenating the payload.
"""

from __future__ import annotations

_from_bytes = int.from_bytes
_FOLD_ABOVE_BITS = 4096
_fold_masks: dict[int, int] = {}


def fold16(value: int) -> int:
    """A non-negative value congruent to ``value`` modulo 0xFFFF, at most about 4096 bits long.

    ``value % 0xFFFF`` costs one hardware division per 30-bit digit; folding the upper half onto the lower half
    (the split is a multiple of 16 bits, and ``2**16 == 1 (mod 0xFFFF)``) is a few fast linear passes, so a
    full-sized payload is folded twice before the division.  Zero only for zero.
    """
    n = value.bit_length()
    while n > _FOLD_ABOVE_BITS:
        h = (n >> 11) << 10  # about half, rounded down to a multiple of 1024 bits (so few masks are ever made)
        mask = _fold_masks.get(h)
        if mask is None:
            mask = _fold_masks[h] = (1 << h) - 1
        value = (value >> h) + (value & mask)
        n = value.bit_length()
    return value


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """The 16-bit Internet checksum of ``data`` (odd length padded with a zero byte) plus ``initial``.

    ``initial`` is any non-negative integer congruent (mod 0xFFFF) to the one's-complement sum of words that
    precede ``data``, e.g. from :func:`pseudo_header_sum`.  A message that carries a correct checksum yields 0.
    """
    value = _from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    # Reduce the (big) data value first: adding ``initial`` to the small remainder saves a big-integer addition.
    r = ((fold16(value) if len(data) > 512 else value) % 0xFFFF + initial) % 0xFFFF
    if r:
        return 0xFFFF - r
    # Multiple of 0xFFFF: folded sum is 0xFFFF (checksum 0) unless everything was zero (checksum 0xFFFF).
    return 0 if value or initial else 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """A value congruent to the one's-complement sum of the IPv4 TCP/UDP pseudo-header, for ``initial``."""
    return _from_bytes(src, "big") + _from_bytes(dst, "big") + proto + length
