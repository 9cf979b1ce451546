"""Short message text: GSM 7-bit default alphabet, UCS-2, segmentation and the concat UDH.

Sans-IO and allocation-light: everything here runs once or more per message on the
hot path (pricing counts parts for every request, the submitter encodes every part,
the SMSC side decodes every submit_sm), so the character tables are built once at
import and the common cases run inside C loops (`re`, `bytes.translate`,
`codecs.charmap_decode`) rather than per character in Python.

References:
- 3GPP TS 23.038 §6.2.1 (GSM 7 bit default alphabet), §6.2.1.1 (extension table),
  §6.1.2.1.1 (packing of 7-bit characters), §4 (SMS data coding scheme).
- 3GPP TS 23.040 §9.2.3.24 (TP-User Data and its header), §9.2.3.24.1 and
  §9.2.3.24.8 (concatenated short messages, 8-bit and 16-bit reference).
- SMPP 3.4 §5.2.19 (data_coding), §5.2.12 (esm_class UDHI): data_coding names
  alphabets below 0x10 and reserves the values above, where carriers put the
  TS 23.038 §4 data coding scheme.
"""

import codecs
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DATA_CODING",
    "GSM7_CHARS",
    "MAX_PARTS",
    "Concat",
    "EncodedText",
    "Encoding",
    "concat_info",
    "concat_udh",
    "decode_short_message",
    "encode_text",
    "encoding_of",
    "gsm7_decode",
    "gsm7_encode",
    "pack_septets",
    "part_count",
    "split_udh",
    "unpack_septets",
]


class Encoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"
    LATIN1 = "latin1"


# Encoding(value) goes through EnumType.__call__ (~1 us); every message's
# text is encoded, so its alphabet is looked up here instead.
_ENCODING_OF: dict[str, Encoding] = {e.value: e for e in Encoding}


def encoding_of(value: str) -> Encoding:
    """The Encoding named `value`; ValueError, as Encoding(value), if none is."""
    encoding = _ENCODING_OF.get(value)
    if encoding is None:
        raise ValueError(f"{value!r} is not a valid Encoding")
    return encoding


# SMPP 3.4 §5.2.19: 0 = SMSC default alphabet (GSM 03.38 for this router, see the
# contract), 3 = Latin 1 (ISO-8859-1), 8 = UCS2 (ISO/IEC-10646).
DATA_CODING: dict[Encoding, int] = {Encoding.GSM7: 0, Encoding.LATIN1: 3, Encoding.UCS2: 8}

# TS 23.040 §9.2.3.24.1: the concatenation reference counts parts in one octet, so a
# concatenated message has at most 255 parts.
MAX_PARTS = 255

# TS 23.040 §9.2.3.16 / §9.2.3.24: TP-UD carries at most 140 octets, i.e. 160 septets
# of the default alphabet, 140 octets of 8-bit data or 70 UCS-2 code units.
_UD_OCTETS = 140
_UD_SEPTETS = _UD_OCTETS * 8 // 7

# Concatenation UDH sizes including the UDHL octet: UDHL + IEI + IEDL + IE data
# (TS 23.040 §9.2.3.24.1: 3 octets of data with an 8-bit reference; §9.2.3.24.8: 4 with
# a 16-bit reference).
_UDH8_OCTETS = 6
_UDH16_OCTETS = 7


def _septets_after_udh(udh_octets: int) -> int:
    # TS 23.040 §9.2.3.24: with a 7-bit alphabet the header is followed by fill bits up
    # to the next septet boundary, so the header costs ceil(8 * octets / 7) septets:
    # 6 octets -> 7 septets (153 left), 7 octets -> 8 septets (152 left).
    return _UD_SEPTETS - (udh_octets * 8 + 6) // 7


_GSM7_SINGLE = _UD_SEPTETS  # 160
_GSM7_MULTI = {False: _septets_after_udh(_UDH8_OCTETS), True: _septets_after_udh(_UDH16_OCTETS)}
_OCTET_SINGLE = _UD_OCTETS  # 140
_OCTET_MULTI = {False: _UD_OCTETS - _UDH8_OCTETS, True: _UD_OCTETS - _UDH16_OCTETS}
_UCS2_SINGLE = _UD_OCTETS // 2  # 70
# TS 23.040 §9.2.3.24.1: "A UCS2 character shall not be split in the middle", so an odd
# header leaves 139 octets = 66 code units.
_UCS2_MULTI = {False: _OCTET_MULTI[False] // 2, True: _OCTET_MULTI[True] // 2}


# --------------------------------------------------------------------------------------
# GSM 7 bit default alphabet (TS 23.038 §6.2.1), one string per column of the spec's
# table, i.e. codes 0x00-0x0F, 0x10-0x1F, ... Code 0x1B is the escape to the extension
# table and is not a character; it is kept here as "\x1b" only so the decoder can find
# escapes, and is excluded from everything the encoder accepts.
# 0x09 is "Ç" (LATIN CAPITAL LETTER C WITH CEDILLA) as in the current table; the small
# "ç" is not in the alphabet and therefore makes a text UCS-2, as it must to survive.
_GSM7_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_GSM7_DEFAULT) == 128

_ESC = 0x1B

# TS 23.038 §6.2.1.1: the extension table, reached by 0x1B + code. 0x0A is the page
# break (form feed); 0x1B is reserved for a further extension table; 0x0D (CR2) has no
# character. Every other code is undefined.
_GSM7_EXTENSION: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

# Characters that cost one septet, and those that cost two (escape + code).
_GSM7_BASIC_CHARS = "".join(ch for code, ch in enumerate(_GSM7_DEFAULT) if code != _ESC)
_GSM7_EXTENSION_CHARS = "".join(_GSM7_EXTENSION.values())
GSM7_CHARS: frozenset[str] = frozenset(_GSM7_BASIC_CHARS + _GSM7_EXTENSION_CHARS)

# Encoding runs in one of two ways. Nearly every real GSM text consists only of
# characters that are both single-septet and in Latin-1 (everything but the ten Greek
# capitals), so `str.encode("latin-1")` followed by one `bytes.translate` does it in C.
# Any other GSM character (Greek, or an extension character which needs two septets) is
# first rewritten with a regex into a Latin-1 stand-in: for a code whose default
# character is not Latin-1 (the Greek letters, 0x10-0x1A) the stand-in is the C1
# control U+0080 + code, which can never occur in a GSM text, so it is unambiguous.
_LATIN1_STANDIN = [
    ch if ord(ch) < 0x100 else chr(0x80 + code) for code, ch in enumerate(_GSM7_DEFAULT)
]
_table = bytearray(256)
for _code, _ch in enumerate(_LATIN1_STANDIN):
    _table[ord(_ch)] = _code
_LATIN1_TO_GSM7 = bytes(_table)
_SPECIAL_STANDIN: dict[str, str] = {
    ch: _LATIN1_STANDIN[code]
    for code, ch in enumerate(_GSM7_DEFAULT)
    if code != _ESC and ord(ch) >= 0x100
}
_SPECIAL_STANDIN.update(
    {ch: "\x1b" + _LATIN1_STANDIN[code] for code, ch in _GSM7_EXTENSION.items()}
)
del _code, _ch, _table

_FAST_CHARS = "".join(ch for ch in _GSM7_BASIC_CHARS if ord(ch) < 0x100)


def _char_class(chars: str, *, negate: bool) -> re.Pattern[str]:
    body = "".join(sorted(re.escape(ch) for ch in set(chars)))
    return re.compile(("[^" if negate else "[") + body + "]")


# First character that the fast path cannot take (to search the rest only from there).
_NOT_FAST_RE = _char_class(_FAST_CHARS, negate=True)
# A character outside the alphabet and its extension table: the text needs UCS-2.
_NOT_GSM7_RE = _char_class(_GSM7_BASIC_CHARS + _GSM7_EXTENSION_CHARS, negate=True)
_SPECIAL_RE = _char_class("".join(_SPECIAL_STANDIN), negate=False)
_EXTENSION_RE = _char_class(_GSM7_EXTENSION_CHARS, negate=False)


def _standin(match: re.Match[str]) -> str:
    return _SPECIAL_STANDIN[match.group()]


def gsm7_encode(text: str) -> bytes | None:
    """Encode to unpacked septets (one per octet, as SMPP data_coding 0 carries them).

    Extension-table characters become the two septets 0x1B, code (TS 23.038 §6.2.1.1).
    Returns None when a character is in neither the default alphabet nor the extension
    table: the caller then needs UCS-2.
    """
    first = _NOT_FAST_RE.search(text)
    if first is not None:
        if _NOT_GSM7_RE.search(text, first.start()) is not None:
            return None
        text = _SPECIAL_RE.sub(_standin, text)
    return text.encode("latin-1").translate(_LATIN1_TO_GSM7)


def _gsm7_septets(text: str) -> int | None:
    """Septets `text` needs in the default alphabet, or None if it does not fit it."""
    first = _NOT_FAST_RE.search(text)
    if first is None:
        return len(text)
    start = first.start()
    if _NOT_GSM7_RE.search(text, start) is not None:
        return None
    return len(text) + len(_EXTENSION_RE.findall(text, start))


# Decoding: octets 0x00-0x7F through the default table; an octet with the top bit set
# is not a septet at all, so it becomes U+FFFD rather than a guess.
_GSM7_DECODE_TABLE = _GSM7_DEFAULT + "\ufffd" * 128

# After an escape, TS 23.038 §6.2.1.1: "In the event that an MS receives a code where a
# symbol is not represented in the above table then the MS shall display the character
# shown in the main GSM 7 bit default alphabet table" -- so an unknown code falls back to
# the default character, which is what the decoded text already holds. 0x1B 0x1B is
# "reserved for the extension to another extension table ... a receiving entity shall
# display a space". A lone escape at the very end has no code at all; TS 23.038 §6.1.1
# note 1 displays unused codes as a space, which is what we do too.
_UNESCAPE: dict[str, str] = {_GSM7_DEFAULT[code]: ch for code, ch in _GSM7_EXTENSION.items()}
_UNESCAPE["\x1b"] = " "
_UNESCAPE[""] = " "
_ESCAPE_RE = re.compile("\x1b(.?)", re.DOTALL)


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    return _UNESCAPE.get(code, code)


def gsm7_decode(data: bytes) -> str:
    """Decode unpacked septets (one per octet). Never raises."""
    # The table maps all 256 octets, so "strict" cannot fail.
    text = codecs.charmap_decode(data, "strict", _GSM7_DECODE_TABLE)[0]
    if "\x1b" in text:
        text = _ESCAPE_RE.sub(_unescape, text)
    return text


# --------------------------------------------------------------------------------------
# Septet packing, TS 23.038 §6.1.2.1.1: septets are laid end to end starting at bit 0 of
# the first octet ("completing the octets with zeros on the left"). With a user data
# header, TS 23.040 §9.2.3.24 inserts fill bits after the header so that the first
# septet starts on a septet boundary counted from the start of TP-UD; `fill_bits` is the
# number of those zero bits in front of the first septet (0-6).


@functools.lru_cache(maxsize=64)
def _lane_masks(lanes: int) -> tuple[int, ...]:
    """Bit masks over `lanes` 64-bit lanes for the packing steps below."""

    def repeat(pattern: bytes) -> int:
        return int.from_bytes(pattern * (8 // len(pattern)) * lanes, "little")

    return (
        repeat(b"\x7f"),  # the septet in every octet
        repeat(b"\x7f\x00"),  # even septet of each 16-bit pair
        repeat(b"\x00\x7f"),  # odd septet of each pair
        repeat(b"\xff\x3f\x00\x00"),  # low 14 bits of each 32-bit lane
        repeat(b"\x00\x00\xff\x3f"),  # high 14-bit group of each 32-bit lane
        repeat(b"\xff\xff\xff\x0f\x00\x00\x00\x00"),  # low 28 bits of each 64-bit lane
        repeat(b"\x00\x00\x00\x00\xff\xff\xff\x0f"),  # high 28-bit group of each lane
    )


# Both directions work on the whole message as one big integer, so the work is a dozen
# C-level big-int operations instead of a Python step per septet (about 10x faster for
# 160 septets). Packing squeezes the 8-bit lanes in three halving steps: pairs of septets
# into 14 bits of a 16-bit lane, pairs of those into 28 bits of a 32-bit lane, then into
# 56 bits of a 64-bit lane -- 8 septets in 7 octets, the spec's own grouping -- and
# finally drops the empty eighth octet of each lane. Unpacking runs the same steps back.


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets (one per octet, top bit ignored) into 7-bit packed octets.

    The result is ceil((7 * len(septets) + fill_bits) / 8) octets long: the fill bits
    are zeros in the low bits of the first octet.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    count = len(septets)
    lanes = (count + 7) // 8
    septet, even, odd, low14, high14, low28, high28 = _lane_masks(lanes)
    value = int.from_bytes(septets, "little") & septet
    value = (value & even) | (value & odd) >> 1
    value = (value & low14) | (value & high14) >> 2
    value = (value & low28) | (value & high28) >> 4
    packed = bytearray(value.to_bytes(lanes * 8, "little"))
    del packed[7::8]
    if fill_bits:
        value = int.from_bytes(packed, "little") << fill_bits
        packed = bytearray(value.to_bytes(len(packed) + 1, "little"))
    del packed[(7 * count + fill_bits + 7) // 8 :]
    return bytes(packed)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Unpack `count` septets (one per output octet) from packed `data`.

    The count comes from the carrier (TP-UDL, or sm_length converted by the caller)
    because the last octet can hold 1-7 spare zero bits that look like '@' septets.
    If `data` holds fewer septets than `count`, only those present are returned: a
    short message that lies about its length still decodes as far as it goes.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    count = max(0, min(count, (len(data) * 8 - fill_bits) // 7))
    lanes = (count + 7) // 8
    value = (int.from_bytes(data, "little") >> fill_bits) & ((1 << 7 * count) - 1)
    stream = value.to_bytes(lanes * 7, "little")
    # Give every 7 octets (8 septets) an empty eighth octet: back to 64-bit lanes.
    spread = bytearray(lanes * 8)
    for k in range(7):
        spread[k::8] = stream[k::7]
    _, even, odd, low14, high14, low28, high28 = _lane_masks(lanes)
    value = int.from_bytes(spread, "little")
    value = (value & low28) | (value << 4) & high28
    value = (value & low14) | (value << 2) & high14
    value = (value & even) | (value << 1) & odd
    return value.to_bytes(lanes * 8, "little")[:count]


def _fill_bits(udh_octets: int) -> int:
    # TS 23.040 §9.2.3.24: zero bits between the header and the first septet.
    return (7 - udh_octets * 8 % 7) % 7


# --------------------------------------------------------------------------------------
# Concatenation header, TS 23.040 §9.2.3.24.1 (IEI 0x00, 8-bit reference) and §9.2.3.24.8
# (IEI 0x08, 16-bit reference).

_IEI_CONCAT8 = 0x00
_IEI_CONCAT16 = 0x08


@dataclass(frozen=True, slots=True)
class Concat:
    """Where one part sits in a concatenated message."""

    ref: int
    total: int
    seq: int


def concat_udh(ref: int, total: int, seq: int, *, sixteen_bit: bool = False) -> bytes:
    """The whole user data header (UDHL included) for part `seq` of `total`."""
    if not 1 <= total <= MAX_PARTS:
        raise ValueError(f"total must be 1..{MAX_PARTS}, not {total}")
    if not 1 <= seq <= total:
        raise ValueError(f"seq must be 1..{total}, not {seq}")
    if sixteen_bit:
        if not 0 <= ref <= 0xFFFF:
            raise ValueError(f"16-bit ref must be 0..65535, not {ref}")
        return bytes((6, _IEI_CONCAT16, 4, ref >> 8, ref & 0xFF, total, seq))
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"8-bit ref must be 0..255, not {ref}")
    return bytes((5, _IEI_CONCAT8, 3, ref, total, seq))


def split_udh(short_message: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split a short_message sent with UDHI set into (information elements, payload).

    Raises ValueError when the header does not fit: an empty message, a UDHL longer
    than the message, or an information element running past the UDHL.
    """
    if not short_message:
        raise ValueError("UDHI set but short_message is empty")
    end = 1 + short_message[0]
    if end > len(short_message):
        raise ValueError(f"UDH length {end - 1} exceeds message length {len(short_message) - 1}")
    ies: list[tuple[int, bytes]] = []
    i = 1
    while i < end:
        if i + 2 > end:
            raise ValueError("UDH ends inside an information element header")
        iei, iedl = short_message[i], short_message[i + 1]
        j = i + 2 + iedl
        if j > end:
            raise ValueError(f"information element 0x{iei:02X} runs past the UDH")
        ies.append((iei, bytes(short_message[i + 2 : j])))
        i = j
    return ies, bytes(short_message[end:])


def concat_info(ies: list[tuple[int, bytes]]) -> Concat | None:
    """The concatenation element among `ies`, or None if there is no usable one.

    TS 23.040 §9.2.3.24: when an element that cannot repeat appears twice, or two with
    mutually exclusive meaning appear (8- and 16-bit concat), the last one is used.
    §9.2.3.24.1: a total of 0, or a sequence number of 0 or above the total, means the
    receiver "shall ignore the whole Information Element".
    """
    found: Concat | None = None
    for iei, data in ies:
        if iei == _IEI_CONCAT8 and len(data) == 3:
            ref, total, seq = data
        elif iei == _IEI_CONCAT16 and len(data) == 4:
            ref, total, seq = data[0] << 8 | data[1], data[2], data[3]
        else:
            continue
        if total == 0 or seq == 0 or seq > total:
            continue
        found = Concat(ref, total, seq)
    return found


# --------------------------------------------------------------------------------------
# Segmentation


@dataclass(slots=True)
class EncodedText:
    """A text in its wire encoding, cut into the parts it will travel in.

    `parts` hold the payload of each part without any UDH: unpacked septets for GSM7,
    UTF-16BE for UCS2, ISO-8859-1 for LATIN1. When there is more than one part, each
    was sized to leave room for the concat UDH -- the 7-octet 16-bit-reference one if
    `sixteen_bit`, else the 6-octet 8-bit one -- and `short_messages()` adds it.
    """

    encoding: Encoding
    data_coding: int
    parts: list[bytes]
    sixteen_bit: bool = False

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS): a
    # message's text is encoded when it is admitted and when it is sent.
    def __init__(
        self, encoding: Encoding, data_coding: int, parts: list[bytes], sixteen_bit: bool = False
    ) -> None:
        self.encoding = encoding
        self.data_coding = data_coding
        self.parts = parts
        self.sixteen_bit = sixteen_bit

    @property
    def part_count(self) -> int:
        return len(self.parts)

    def short_messages(self, ref: int, *, packed: bool = False) -> list[bytes]:
        """Each part as a complete short_message, UDH first when there are several.

        `packed` packs GSM7 septets (for carriers configured for packed 7-bit), with
        the fill bits TS 23.040 §9.2.3.24 puts after the header; it has no effect on
        other encodings. Set esm_class UDHI (0x40) on the submit_sm when there is more
        than one part.
        """
        total = len(self.parts)
        pack = packed and self.encoding == Encoding.GSM7
        if total == 1:
            return [pack_septets(self.parts[0]) if pack else self.parts[0]]
        out = []
        for seq, payload in enumerate(self.parts, 1):
            udh = concat_udh(ref, total, seq, sixteen_bit=self.sixteen_bit)
            if pack:
                payload = pack_septets(payload, _fill_bits(len(udh)))
            out.append(udh + payload)
        return out


def _cut(
    data: bytes, size: int, unit: int, keeps_next: Callable[[bytes, int], bool]
) -> list[bytes]:
    """Cut `data` into chunks of at most `size` bytes, moving a cut back by one `unit`
    whenever `keeps_next(data, cut)` says the unit before it must stay with the next."""
    parts = []
    start, length = 0, len(data)
    while length - start > size:
        cut = start + size
        if keeps_next(data, cut):
            cut -= unit
        parts.append(data[start:cut])
        start = cut
    parts.append(data[start:])
    return parts


def _escape_before(data: bytes, cut: int) -> bool:
    # TS 23.040 §9.2.3.24.1: "A character represented by an escape-sequence shall not be
    # split in the middle." Our encoder never emits 0x1B as an extension code, so any
    # 0x1B is the first half of a pair.
    return data[cut - 1] == _ESC


def _high_surrogate_before(data: bytes, cut: int) -> bool:
    # TS 23.040 §9.2.3.24.1: "A UCS2 character shall not be split in the middle"; a
    # character outside the BMP is a surrogate pair in UTF-16 and must stay whole too,
    # or each part shows a broken half. High surrogates are 0xD800-0xDBFF.
    return 0xD8 <= data[cut - 2] <= 0xDB


def _no_split_constraint(data: bytes, cut: int) -> bool:
    return False


_KEEPS_NEXT: dict[Encoding, Callable[[bytes, int], bool]] = {
    Encoding.GSM7: _escape_before,
    Encoding.UCS2: _high_surrogate_before,
    Encoding.LATIN1: _no_split_constraint,
}

# (single-part capacity, per-part capacity with an 8-bit / 16-bit reference UDH, unit),
# all in octets of the wire encoding; the unit is what a cut may move back by.
_LIMITS: dict[Encoding, tuple[int, dict[bool, int], int]] = {
    Encoding.GSM7: (_GSM7_SINGLE, _GSM7_MULTI, 1),
    Encoding.UCS2: (
        _UCS2_SINGLE * 2,
        {ref16: units * 2 for ref16, units in _UCS2_MULTI.items()},
        2,
    ),
    Encoding.LATIN1: (_OCTET_SINGLE, _OCTET_MULTI, 1),
}


def _split(encoding: Encoding, data: bytes, sixteen_bit: bool) -> list[bytes]:
    single, multi, unit = _LIMITS[encoding]
    if len(data) <= single:
        return [data]
    return _cut(data, multi[sixteen_bit], unit, _KEEPS_NEXT[encoding])


def encode_text(
    text: str, *, encoding: str | None = None, sixteen_bit: bool = False
) -> EncodedText:
    """Encode `text` and cut it into parts.

    Without `encoding`, GSM7 when every character is in the default alphabet or its
    extension table (extension characters cost two septets), else UCS2. One part holds
    160 septets / 70 UTF-16 code units / 140 Latin-1 octets; several parts hold
    153 / 67 / 134 each, leaving room for the 6-octet concat UDH (TS 23.040
    §9.2.3.24.1), or 152 / 66 / 133 with `sixteen_bit` for the 7-octet one
    (§9.2.3.24.8). Escape pairs and surrogate pairs are never split.

    Raises ValueError if a forced encoding cannot represent the text, if the text holds
    a lone surrogate (not encodable as UTF-16), or if it needs more than 255 parts.
    """
    # The plain value (from config, or an HTTP body) is as good as the member.
    forced = None if encoding is None else encoding_of(encoding)
    chosen = Encoding.UCS2
    data: bytes | None = None
    if forced is None or forced is Encoding.GSM7:
        data = gsm7_encode(text)
        if data is not None:
            chosen = Encoding.GSM7
        elif forced is Encoding.GSM7:
            raise ValueError("text has characters outside the GSM 7 bit default alphabet")
    elif forced is Encoding.LATIN1:
        chosen, data = forced, text.encode("latin-1")
    if chosen is Encoding.UCS2:
        # UnicodeEncodeError, a ValueError, for a lone surrogate.
        data = text.encode("utf-16-be")
    assert data is not None
    parts = _split(chosen, data, sixteen_bit)
    if len(parts) > MAX_PARTS:
        raise ValueError(f"text needs {len(parts)} parts, more than {MAX_PARTS}")
    return EncodedText(chosen, DATA_CODING[chosen], parts, sixteen_bit)


# A character outside the BMP: a surrogate pair in UTF-16.
_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")


def _count_parts(units: int, multi: int, pair_starts: set[int]) -> int:
    """How many parts `_cut` makes of `units`, given where the two-unit characters start."""
    count, start = 1, 0
    while units - start > multi:
        cut = start + multi
        if cut - 1 in pair_starts:
            cut -= 1
        start = cut
        count += 1
    return count


def part_count(text: str, *, sixteen_bit: bool = False) -> tuple[Encoding, int]:
    """(encoding, number of parts) that `encode_text(text)` produces, without encoding.

    A two-unit character (an extension character's escape pair, a surrogate pair) that
    straddles a boundary moves the cut back by one unit and can add a part; so when
    there are such characters in a multi-part text their unit offsets are located and
    the cuts replayed, still without building any bytes. Unlike `encode_text` it does
    not refuse more than 255 parts: what is too long is the caller's decision. Raises
    ValueError for a lone surrogate.
    """
    septets = _gsm7_septets(text)
    if septets is not None:
        encoding, units, pairs_re = Encoding.GSM7, septets, _EXTENSION_RE
        single, multi = _GSM7_SINGLE, _GSM7_MULTI[sixteen_bit]
    else:
        # Encoding is the fastest way to count UTF-16 units, and it refuses lone
        # surrogates exactly as encode_text does.
        units = len(text.encode("utf-16-be")) // 2
        encoding, pairs_re = Encoding.UCS2, _ASTRAL_RE
        single, multi = _UCS2_SINGLE, _UCS2_MULTI[sixteen_bit]
    if units <= single:
        return encoding, 1
    if units == len(text):
        # One unit per character: no pair exists that could straddle a cut.
        return encoding, -(-units // multi)
    # The k-th pair starts k units after its character index (each earlier pair added one).
    pair_starts = {match.start() + k for k, match in enumerate(pairs_re.finditer(text))}
    return encoding, _count_parts(units, multi, pair_starts)


# --------------------------------------------------------------------------------------
# Decoding whatever a peer sends. SMPP 3.4 §5.2.19 defines data_coding 0x00-0x0E; from
# 0x10 up SMSCs and handsets use the TS 23.038 §4 data coding scheme octet itself
# (e.g. 0x10 / 0x18 for class 0 "flash" GSM / UCS2, 0xF0-0xF7 for message classes).


def _decode_latin1(payload: bytes) -> str:
    return payload.decode("latin-1")


def _decode_ucs2(payload: bytes) -> str:
    # UCS-2 is read as UTF-16BE so surrogate pairs from modern handsets come out as one
    # character; a lone surrogate or a dangling odd octet becomes U+FFFD, so the result
    # is always valid Unicode (it goes on to JSON and PostgreSQL).
    return payload.decode("utf-16-be", "replace")


def _decoder(codec: str) -> Callable[[bytes], str]:
    def decode(payload: bytes) -> str:
        return payload.decode(codec, "replace")

    return decode


def _dcs_decoder(dcs: int) -> Callable[[bytes], str]:
    """The decoder for one data_coding value, per SMPP 3.4 §5.2.19 and TS 23.038 §4."""
    smpp: dict[int, Callable[[bytes], str]] = {
        0x00: gsm7_decode,  # SMSC default alphabet: GSM 03.38 here (contract §4)
        # IA5 is 7-bit ASCII; Latin-1 decodes it identically and keeps stray 8-bit
        # octets readable instead of failing.
        0x01: _decode_latin1,
        0x02: _decode_latin1,  # octet unspecified (8-bit binary): octets 1:1
        0x03: _decode_latin1,
        0x04: _decode_latin1,  # octet unspecified (8-bit binary)
        0x06: _decoder("iso8859_5"),  # Cyrillic
        0x07: _decoder("iso8859_8"),  # Latin/Hebrew
        0x08: _decode_ucs2,
        0x0A: _decoder("iso2022_jp"),  # ISO-2022-JP (music codes)
        # KS C 5601 names a character set; on the wire it is EUC-KR (Python's codec
        # registry aliases "ksc5601" to it).
        0x0E: _decoder("euc_kr"),
        # 0x05 JIS X 0208 and 0x0D JIS X 0212 name character sets without a byte
        # encoding, 0x09 is pictograms, 0x0B/0x0C/0x0F are reserved: octets 1:1.
    }
    if dcs < 0x10:
        return smpp.get(dcs, _decode_latin1)
    group = dcs >> 4
    if group <= 0x7:
        # 00xx general data coding and 01xx automatic deletion: bits 5..0 alike.
        if dcs & 0x20:
            # Compressed (TS 23.042): not supported, keep the octets 1:1.
            return _decode_latin1
        alphabet = dcs >> 2 & 0x3
        if alphabet == 0x1:
            return _decode_latin1  # 8-bit data
        if alphabet == 0x2:
            return _decode_ucs2
        # 00 is the default alphabet; 11 is reserved, and TS 23.038 §4 says "Any
        # reserved codings shall be assumed to be the GSM 7 bit default alphabet".
        return gsm7_decode
    if group == 0xE:
        return _decode_ucs2  # message waiting indication, store, UCS2
    if group == 0xF:
        # Data coding / message class: bit 2 is the message coding, 0 = default
        # alphabet, 1 = 8-bit data.
        return _decode_latin1 if dcs & 0x04 else gsm7_decode
    # 1000..1011 reserved groups (default alphabet by the rule above), 1100 and 1101
    # message waiting indication, discard / store, whose text is the default alphabet.
    return gsm7_decode


_DECODERS: tuple[Callable[[bytes], str], ...] = tuple(_dcs_decoder(dcs) for dcs in range(256))


def decode_short_message(data_coding: int, payload: bytes) -> str:
    """Decode a short_message payload (without UDH; GSM text unpacked). Never raises."""
    if 0 <= data_coding <= 0xFF:
        return _DECODERS[data_coding](payload)
    return _decode_latin1(payload)
