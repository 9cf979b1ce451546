"""GSM 03.38 / UCS-2 text, segmentation and concat UDH (sms/text.py)."""

import codecs

import pytest
import smpplib.gsm
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsrouter.sms.text import (
    DATA_CODING,
    MAX_PARTS,
    Concat,
    Encoding,
    concat_info,
    concat_udh,
    decode_short_message,
    encode_text,
    encoding_of,
    gsm7_decode,
    gsm7_encode,
    pack_septets,
    part_count,
    split_udh,
    unpack_septets,
)

# The default alphabet as TS 23.038 §6.2.1 gives it, written here as code -> Unicode
# code point, independently of the module's string table. Codes not listed map to the
# same ASCII code point; 0x1B is the escape and has no character.
_NOT_ASCII = {
    0x00: 0x0040, 0x01: 0x00A3, 0x02: 0x0024, 0x03: 0x00A5, 0x04: 0x00E8, 0x05: 0x00E9,
    0x06: 0x00F9, 0x07: 0x00EC, 0x08: 0x00F2, 0x09: 0x00C7, 0x0B: 0x00D8, 0x0C: 0x00F8,
    0x0E: 0x00C5, 0x0F: 0x00E5, 0x10: 0x0394, 0x11: 0x005F, 0x12: 0x03A6, 0x13: 0x0393,
    0x14: 0x039B, 0x15: 0x03A9, 0x16: 0x03A0, 0x17: 0x03A8, 0x18: 0x03A3, 0x19: 0x0398,
    0x1A: 0x039E, 0x1C: 0x00C6, 0x1D: 0x00E6, 0x1E: 0x00DF, 0x1F: 0x00C9, 0x24: 0x00A4,
    0x40: 0x00A1, 0x5B: 0x00C4, 0x5C: 0x00D6, 0x5D: 0x00D1, 0x5E: 0x00DC, 0x5F: 0x00A7,
    0x60: 0x00BF, 0x7B: 0x00E4, 0x7C: 0x00F6, 0x7D: 0x00F1, 0x7E: 0x00FC, 0x7F: 0x00E0,
}  # fmt: skip
DEFAULT = {code: chr(_NOT_ASCII.get(code, code)) for code in range(128) if code != 0x1B}
# TS 23.038 §6.2.1.1, the extension table.
EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}  # fmt: skip
BASIC_CHARS = "".join(DEFAULT.values())
EXTENSION_CHARS = "".join(EXTENSION.values())
GSM_CHARS = BASIC_CHARS + EXTENSION_CHARS

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS))
# Mostly GSM with some extension characters, non-GSM BMP characters and emoji, so that
# pairs land on part boundaries often.
mixed_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(BASIC_CHARS),
        st.sampled_from(EXTENSION_CHARS),
        st.sampled_from("жшΩ中ç`\t"),
        st.sampled_from("😀🎉👍🏽𝄞"),
    ),
    max_size=800,
)


# --- GSM 7-bit alphabet ----------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(DEFAULT))
def test_default_alphabet_character_matches_spec(code: int) -> None:
    char = DEFAULT[code]
    assert gsm7_encode(char) == bytes([code])
    assert gsm7_decode(bytes([code])) == char


@pytest.mark.parametrize("code", sorted(EXTENSION))
def test_extension_character_is_escape_plus_code(code: int) -> None:
    char = EXTENSION[code]
    assert gsm7_encode(char) == bytes([0x1B, code])
    assert gsm7_decode(bytes([0x1B, code])) == char


def test_whole_alphabet_round_trips_in_one_text() -> None:
    encoded = gsm7_encode(GSM_CHARS)
    assert encoded is not None
    assert len(encoded) == 127 + 2 * 10
    assert gsm7_decode(encoded) == GSM_CHARS


@pytest.mark.parametrize(
    "text",
    ["ç", "`", "\x1b", "\t", "ж", "😀", "\u2126", "Ok but `quoted`", "price 5 €, ça va"],
)
def test_characters_outside_the_alphabet_give_none(text: str) -> None:
    assert gsm7_encode(text) is None
    assert part_count(text)[0] is Encoding.UCS2


@given(gsm_text)
def test_gsm_round_trip(text: str) -> None:
    encoded = gsm7_encode(text)
    assert encoded is not None
    assert max(encoded, default=0) < 0x80
    assert len(encoded) == len(text) + sum(text.count(c) for c in EXTENSION_CHARS)
    assert gsm7_decode(encoded) == text


def test_unknown_escape_shows_the_default_character() -> None:
    # TS 23.038 §6.2.1.1: a code missing from the extension table displays as the
    # default-table character.
    assert gsm7_decode(b"\x1bA\x1b\x00") == "A@"


def test_escape_escape_is_a_space_and_lone_trailing_escape_too() -> None:
    assert gsm7_decode(b"a\x1b\x1bb") == "a b"
    assert gsm7_decode(b"ab\x1b") == "ab "


def test_octets_with_the_top_bit_are_replacement_characters() -> None:
    assert gsm7_decode(b"a\x80\xffb") == "a\ufffd\ufffdb"
    assert gsm7_decode(b"\x1b\xe5") == "\ufffd"


@given(st.binary(max_size=400))
def test_gsm_decode_never_raises_and_yields_valid_unicode(data: bytes) -> None:
    text = gsm7_decode(data)
    text.encode("utf-8")
    assert len(text) <= len(data)


# --- Segmentation ----------------------------------------------------------------------


def test_160_septets_is_one_part_161_is_two() -> None:
    one = encode_text("a" * 160)
    assert (one.encoding, one.data_coding, one.part_count) == (Encoding.GSM7, 0, 1)
    assert one.parts == [b"a" * 160]
    two = encode_text("a" * 161)
    assert [len(p) for p in two.parts] == [153, 8]
    assert part_count("a" * 160) == (Encoding.GSM7, 1)
    assert part_count("a" * 161) == (Encoding.GSM7, 2)


def test_extension_characters_count_two_septets() -> None:
    assert part_count("€" * 80) == (Encoding.GSM7, 1)
    assert part_count("€" * 80 + "a") == (Encoding.GSM7, 2)
    assert part_count("[" * 79 + "ab") == (Encoding.GSM7, 1)
    assert encode_text("{" * 80).parts == [b"\x1b\x28" * 80]


def test_escape_pair_on_the_boundary_moves_to_the_next_part() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the pair would occupy septets 153 and 154
    encoded = encode_text(text)
    assert encoded.parts[0] == b"a" * 152
    assert encoded.parts[1] == b"\x1b\x65" + b"b" * 10
    assert part_count(text) == (Encoding.GSM7, 2)


def test_escape_pair_that_fits_stays_in_the_part() -> None:
    text = "a" * 151 + "€" + "b" * 10  # the pair is septets 152 and 153
    encoded = encode_text(text)
    assert encoded.parts == [b"a" * 151 + b"\x1b\x65", b"b" * 10]


def test_boundary_shift_can_add_a_part() -> None:
    # 2 * 153 septets exactly fill two parts, unless a pair straddles the first cut.
    aligned = "a" * 151 + "€" + "a" * 153
    shifted = "a" * 152 + "€" + "a" * 152
    assert (
        part_count(aligned)
        == (Encoding.GSM7, 2)
        == (Encoding.GSM7, len(encode_text(aligned).parts))
    )
    assert (
        part_count(shifted)
        == (Encoding.GSM7, 3)
        == (Encoding.GSM7, len(encode_text(shifted).parts))
    )


def test_earlier_pairs_shift_where_later_pairs_fall() -> None:
    # The second € starts at septet 152 only because the first one took two septets;
    # it straddles the first cut, which moves back to 152 and leaves 154 septets over.
    text = "€" + "a" * 150 + "€" + "a" * 152
    assert [len(p) for p in encode_text(text).parts] == [152, 153, 1]
    assert part_count(text) == (Encoding.GSM7, 3)
    emoji = "😀" + "ж" * 64 + "😀" + "ж" * 66
    assert [len(p) // 2 for p in encode_text(emoji).parts] == [66, 67, 1]
    assert part_count(emoji) == (Encoding.UCS2, 3)


# Dense in two-unit characters, and long enough for 2-3 parts, so that pairs straddle
# cuts in most examples.
@settings(max_examples=300)
@given(
    st.text(alphabet=st.sampled_from("a€"), min_size=100, max_size=330)
    | st.text(alphabet=st.sampled_from("ж😀"), min_size=40, max_size=150),
    st.booleans(),
)
def test_part_count_agrees_with_encode_text_when_pairs_are_dense(
    text: str, sixteen_bit: bool
) -> None:
    encoded = encode_text(text, sixteen_bit=sixteen_bit)
    assert part_count(text, sixteen_bit=sixteen_bit) == (encoded.encoding, encoded.part_count)


def test_ucs2_70_units_is_one_part_71_is_two() -> None:
    one = encode_text("ж" * 70)
    assert (one.encoding, one.data_coding) == (Encoding.UCS2, 8)
    assert one.parts == ["ж".encode("utf-16-be") * 70]
    two = encode_text("ж" * 71)
    assert [len(p) for p in two.parts] == [134, 8]
    assert part_count("ж" * 70) == (Encoding.UCS2, 1)
    assert part_count("ж" * 71) == (Encoding.UCS2, 2)


def test_emoji_counts_two_units() -> None:
    assert part_count("😀" * 35) == (Encoding.UCS2, 1)
    assert part_count("😀" * 35 + "a") == (Encoding.UCS2, 2)


def test_surrogate_pair_on_the_boundary_moves_to_the_next_part() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10  # the pair would be code units 67 and 68
    encoded = encode_text(text)
    assert encoded.parts[0] == "ж".encode("utf-16-be") * 66
    assert encoded.parts[1].decode("utf-16-be") == "😀" + "ж" * 10
    assert part_count(text) == (Encoding.UCS2, 2)


def test_sixteen_bit_reference_leaves_152_septets_and_66_units() -> None:
    assert [len(p) for p in encode_text("a" * 161, sixteen_bit=True).parts] == [152, 9]
    assert [len(p) for p in encode_text("ж" * 71, sixteen_bit=True).parts] == [132, 10]
    assert part_count("a" * 304, sixteen_bit=True) == (Encoding.GSM7, 2)
    assert part_count("a" * 305, sixteen_bit=True) == (Encoding.GSM7, 3)
    assert part_count("a" * 306) == (Encoding.GSM7, 2)


@settings(max_examples=300)
@given(mixed_text, st.booleans())
@example("a" * 152 + "€" + "a" * 152, False)
@example("ж" * 66 + "😀" * 40, False)
def test_parts_are_full_whole_and_agree_with_part_count(text: str, sixteen_bit: bool) -> None:
    encoded = encode_text(text, sixteen_bit=sixteen_bit)
    is_gsm = all(c in GSM_CHARS for c in text)
    assert encoded.encoding is (Encoding.GSM7 if is_gsm else Encoding.UCS2)
    assert part_count(text, sixteen_bit=sixteen_bit) == (encoded.encoding, encoded.part_count)
    data = b"".join(encoded.parts)
    if is_gsm:
        single, multi, unit = 160, (152 if sixteen_bit else 153), 1
        assert gsm7_decode(data) == text
    else:
        single, multi, unit = 140, (132 if sixteen_bit else 134), 2
        assert data.decode("utf-16-be") == text
    if len(encoded.parts) == 1:
        assert len(data) <= single
        return
    for part, following in zip(encoded.parts, encoded.parts[1:], strict=False):
        # Full, or one unit short because a pair was kept together for the next part.
        assert len(part) in (multi, multi - unit)
        if len(part) == multi - unit and is_gsm:
            assert following[0] == 0x1B
        elif len(part) == multi - unit:
            assert 0xD8 <= following[0] <= 0xDB  # high surrogate
        if is_gsm:
            assert part[-1] != 0x1B
        else:
            part.decode("utf-16-be")  # strict: no half pair at either end
    assert 0 < len(encoded.parts[-1]) <= multi


def test_forced_encodings() -> None:
    latin = encode_text("héllo", encoding=Encoding.LATIN1)
    assert (latin.encoding, latin.data_coding, latin.parts) == (
        Encoding.LATIN1,
        DATA_CODING[Encoding.LATIN1],
        [b"h\xe9llo"],
    )
    assert [len(p) for p in encode_text("x" * 141, encoding=Encoding.LATIN1).parts] == [134, 7]
    ucs2 = encode_text("hello", encoding=Encoding.UCS2)
    assert (ucs2.encoding, ucs2.parts) == (Encoding.UCS2, ["hello".encode("utf-16-be")])
    assert encode_text("hello", encoding="gsm7").parts == [b"hello"]
    with pytest.raises(ValueError):
        encode_text("жук", encoding=Encoding.GSM7)
    with pytest.raises(ValueError):
        encode_text("жук", encoding=Encoding.LATIN1)
    with pytest.raises(ValueError, match="'utf8' is not a valid Encoding"):
        encode_text("hello", encoding="utf8")


def test_an_encoding_is_found_by_its_value_and_only_by_it() -> None:
    for encoding in Encoding:
        assert encoding_of(encoding.value) is encoding
        assert encoding_of(encoding) is encoding
    with pytest.raises(ValueError, match="'GSM7' is not a valid Encoding"):
        encoding_of("GSM7")


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_text("ab\ud800")
    with pytest.raises(ValueError):
        part_count("ab\ud800")


def test_more_than_255_parts_is_refused_but_counted() -> None:
    assert encode_text("a" * 153 * MAX_PARTS).part_count == MAX_PARTS
    with pytest.raises(ValueError):
        encode_text("a" * (153 * MAX_PARTS + 1))
    assert part_count("a" * (153 * MAX_PARTS + 1)) == (Encoding.GSM7, MAX_PARTS + 1)


def test_short_messages_add_the_udh_to_each_part() -> None:
    encoded = encode_text("a" * 200)
    sms = encoded.short_messages(0x42)
    assert sms == [
        b"\x05\x00\x03\x42\x02\x01" + b"a" * 153,
        b"\x05\x00\x03\x42\x02\x02" + b"a" * 47,
    ]
    assert encode_text("hi").short_messages(7) == [b"hi"]
    sixteen = encode_text("ж" * 80, sixteen_bit=True).short_messages(0x1234)
    assert sixteen[1][:7] == b"\x06\x08\x04\x12\x34\x02\x02"


def test_packed_parts_fill_exactly_140_octets() -> None:
    # TS 23.040 §9.2.3.24: 6 octets of UDH + 1 fill bit + 153 septets = 140 octets, and
    # 7 octets + 152 septets (no fill) = 140 octets.
    for sixteen_bit, udh_len, fill, per_part in ((False, 6, 1, 153), (True, 7, 0, 152)):
        text = "".join(BASIC_CHARS[i % len(BASIC_CHARS)] for i in range(400))
        encoded = encode_text(text, sixteen_bit=sixteen_bit)
        sms = encoded.short_messages(9, packed=True)
        assert len(sms[0]) == 140
        for short_message, payload in zip(sms, encoded.parts, strict=True):
            _, user_data = split_udh(short_message)
            assert len(short_message) - len(user_data) == udh_len
            assert unpack_septets(user_data, len(payload), fill) == payload
            assert user_data[0] & ((1 << fill) - 1) == 0  # the fill bits are zeros
        assert len(encoded.parts[0]) == per_part
    assert encode_text("hellohello").short_messages(1, packed=True) == [
        bytes.fromhex("e8329bfd4697d9ec37")
    ]


# --- Packing ---------------------------------------------------------------------------


def test_pack_known_vector() -> None:
    # The 3GPP packing layout: "hellohello" is the classic worked example.
    assert pack_septets(b"hellohello") == bytes.fromhex("e8329bfd4697d9ec37")
    assert unpack_septets(bytes.fromhex("e8329bfd4697d9ec37"), 10) == b"hellohello"
    # Eight septets fill seven octets exactly (TS 23.038 §6.1.2.1.1).
    assert len(pack_septets(b"\x7f" * 8)) == 7
    assert pack_septets(b"\x7f" * 8) == b"\xff" * 7
    assert pack_septets(b"\x01", 1) == b"\x02"
    assert pack_septets(b"\x7f", 6) == b"\xc0\x1f"


@settings(max_examples=300)
@given(st.binary(max_size=300).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert len(packed) == (7 * len(septets) + fill + 7) // 8
    assert unpack_septets(packed, len(septets), fill) == septets
    unfilled = int.from_bytes(pack_septets(septets), "little")
    assert int.from_bytes(packed, "little") == unfilled << fill


def test_pack_ignores_the_top_bit() -> None:
    assert pack_septets(b"\xe8\xe5") == pack_septets(b"\x68\x65")


def test_unpack_returns_what_is_there() -> None:
    packed = pack_septets(b"abc")
    assert unpack_septets(packed, 99) == b"abc"
    assert unpack_septets(packed, 2) == b"ab"
    assert unpack_septets(b"", 5) == b""


def test_fill_bits_out_of_range() -> None:
    with pytest.raises(ValueError):
        pack_septets(b"a", 7)
    with pytest.raises(ValueError):
        unpack_septets(b"a", 1, -1)


# --- Decoding by data_coding -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data_coding", "payload", "expected"),
    [
        (0x00, b"\x00\x02\x11\x1b\x65", "@$_€"),
        (0x01, b"plain ascii", "plain ascii"),
        (0x02, b"\x00\xff", "\x00\xff"),
        (0x03, b"caf\xe9", "café"),
        (0x04, b"\x80", "\x80"),
        (0x06, "Привет".encode("iso8859_5"), "Привет"),
        (0x07, "שלום".encode("iso8859_8"), "שלום"),
        (0x08, "hé😀".encode("utf-16-be"), "hé😀"),
        (0x08, "hé".encode("utf-16-be") + b"\x00", "hé\ufffd"),
        (0x08, b"\xd8\x3d\x00a", "\ufffda"),  # lone high surrogate
        (0x0E, "한국".encode("euc_kr"), "한국"),
        (0x05, b"\x82\xa0", "\x82\xa0"),  # JIS without a byte encoding: octets 1:1
        (0x10, b"\x00", "@"),  # class 0 (flash), default alphabet
        (0x11, b"\x1b\x65", "€"),
        (0x14, b"\x00\xe9", "\x00é"),  # 8-bit data
        (0x18, "ж".encode("utf-16-be"), "ж"),  # class 0, UCS2
        (0x1C, b"\x00", "@"),  # reserved alphabet -> default alphabet
        (0x20, b"\x00", "\x00"),  # compressed default alphabet: octets 1:1
        (0x38, b"\x00\x41", "\x00A"),  # compressed UCS2, class 0: octets 1:1
        (0x64, b"\x00", "\x00"),  # automatic deletion, compressed 8-bit
        (0x48, "ж".encode("utf-16-be"), "ж"),  # automatic deletion group, UCS2
        (0x80, b"\x00", "@"),  # reserved coding group -> default alphabet
        (0xC8, b"\x00", "@"),  # MWI discard
        (0xD8, b"\x00", "@"),  # MWI store, default alphabet
        (0xE8, "ж".encode("utf-16-be"), "ж"),  # MWI store, UCS2
        (0xF0, b"\x00", "@"),  # class 0, default alphabet
        (0xF5, b"\x00", "\x00"),  # class 1, 8-bit data
        (300, b"\xe9", "é"),  # out of range
    ],
)
def test_decode_short_message(data_coding: int, payload: bytes, expected: str) -> None:
    assert decode_short_message(data_coding, payload) == expected


@settings(max_examples=1000)
@given(st.integers(0, 255), st.binary(max_size=200))
def test_decode_never_raises_for_any_data_coding(data_coding: int, payload: bytes) -> None:
    text = decode_short_message(data_coding, payload)
    text.encode("utf-8")  # valid Unicode, storable as it is


# --- UDH -------------------------------------------------------------------------------


def test_concat_udh_8_and_16_bit() -> None:
    assert concat_udh(0xAB, 3, 2) == b"\x05\x00\x03\xab\x03\x02"
    assert concat_udh(0xABCD, 3, 2, sixteen_bit=True) == b"\x06\x08\x04\xab\xcd\x03\x02"


@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data(), st.binary(max_size=20))
def test_udh_build_parse_round_trip(ref: int, total: int, data: st.DataObject, tail: bytes) -> None:
    seq = data.draw(st.integers(1, total))
    sixteen_bit = ref > 0xFF or data.draw(st.booleans())
    ies, payload = split_udh(concat_udh(ref, total, seq, sixteen_bit=sixteen_bit) + tail)
    assert payload == tail
    assert ies == [(0x08 if sixteen_bit else 0x00, ies[0][1])]
    assert concat_info(ies) == Concat(ref, total, seq)


def test_split_udh_with_several_elements() -> None:
    # Application port addressing (IEI 0x05) followed by a concat element.
    message = b"\x0b\x05\x04\x0b\x84\x23\xf0\x00\x03\x07\x02\x01body"
    ies, payload = split_udh(message)
    assert ies == [(0x05, b"\x0b\x84\x23\xf0"), (0x00, b"\x07\x02\x01")]
    assert payload == b"body"
    assert concat_info(ies) == Concat(7, 2, 1)
    assert split_udh(b"\x00rest") == ([], b"rest")


@pytest.mark.parametrize(
    "message",
    [
        b"",  # no UDHL at all
        b"\x05\x00\x03\x01",  # UDHL longer than the message
        b"\x03\x00\x03\x01\x02\x03",  # element runs past the UDHL
        b"\x01\x00",  # UDH ends inside an element header
        b"\x06\x00\x03\x01\x02\x01\x00",  # trailing half element
    ],
)
def test_malformed_udh_raises(message: bytes) -> None:
    with pytest.raises(ValueError):
        split_udh(message)


def test_concat_info_ignores_invalid_and_uses_the_last() -> None:
    assert concat_info([]) is None
    assert concat_info([(0x05, b"\x0b\x84\x23\xf0")]) is None
    assert concat_info([(0x00, b"\x01\x00\x01")]) is None  # total 0
    assert concat_info([(0x00, b"\x01\x02\x00")]) is None  # seq 0
    assert concat_info([(0x00, b"\x01\x02\x03")]) is None  # seq > total
    assert concat_info([(0x00, b"\x01\x02")]) is None  # wrong length
    assert concat_info([(0x00, b"\x01\x02\x01"), (0x08, b"\x01\x00\x03\x03")]) == Concat(256, 3, 3)
    assert concat_info([(0x00, b"\x01\x02\x01"), (0x00, b"\x05\x00\x01")]) == Concat(1, 2, 1)


@pytest.mark.parametrize(
    ("ref", "total", "seq", "sixteen_bit"),
    [(256, 2, 1, False), (-1, 2, 1, False), (65536, 2, 1, True), (1, 0, 1, False),
     (1, 256, 1, False), (1, 2, 0, False), (1, 2, 3, False)],
)  # fmt: skip
def test_concat_udh_refuses_out_of_range(ref: int, total: int, seq: int, sixteen_bit: bool) -> None:
    with pytest.raises(ValueError):
        concat_udh(ref, total, seq, sixteen_bit=sixteen_bit)


# --- Differential: smpplib.gsm ---------------------------------------------------------
#
# smpplib's gsm_encode uses a 256-entry lookup string where 0x1B stands for itself and
# filler "`" sits at 0x5F in place of "§"; it has no form feed. It cuts multi-part
# texts every 153 octets (its FIXME: escape pairs may split) or every 134 octets of
# UTF-16. So the comparison is restricted to what it gets right: the intersection of
# the two alphabets, and part counts only where no pair can straddle a cut.

SOUND_GSM = "".join(c for c in GSM_CHARS if c not in "§\f")


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(SOUND_GSM), max_size=600))
def test_differential_gsm_bytes_and_parts_against_smpplib(text: str) -> None:
    ours = encode_text(text)
    assert gsm7_encode(text) == smpplib.gsm.gsm_encode(text)
    theirs, their_coding, _ = smpplib.gsm.make_parts(text)
    assert their_coding == ours.data_coding == 0
    if len(theirs) > 1:
        theirs = [part[6:] for part in theirs]  # their 8-bit concat UDH
    assert b"".join(theirs) == b"".join(ours.parts)
    if not any(c in EXTENSION_CHARS for c in text):
        assert len(theirs) == ours.part_count == part_count(text)[1]


@settings(max_examples=200)
@given(
    st.text(
        # BMP only, no lone surrogates, none of the characters smpplib gets wrong.
        alphabet=st.characters(
            max_codepoint=0xFFFF, exclude_categories=("Cs",), exclude_characters="§\f`\x1b"
        ),
        max_size=300,
    )
)
def test_differential_ucs2_against_smpplib(text: str) -> None:
    ours = encode_text(text)
    theirs, their_coding, _ = smpplib.gsm.make_parts(text)
    if ours.encoding is Encoding.GSM7:
        return  # compared above
    assert their_coding == ours.data_coding == 8
    if len(theirs) > 1:
        theirs = [part[6:] for part in theirs]
    # Same bytes, same cuts: every BMP character is exactly one code unit.
    assert theirs == ours.parts


# --- Fast paths agree with the slow definition ----------------------------------------


@given(mixed_text)
def test_gsm7_encode_agrees_with_a_per_character_definition(text: str) -> None:
    inverse = {c: bytes([code]) for code, c in DEFAULT.items()}
    inverse.update({c: bytes([0x1B, code]) for code, c in EXTENSION.items()})
    expected = b"".join(inverse[c] for c in text) if all(c in inverse for c in text) else None
    assert gsm7_encode(text) == expected


def test_decode_table_agrees_with_charmap_definition() -> None:
    table = "".join(DEFAULT.get(code, "\x1b") for code in range(128))
    plain = bytes(code for code in range(128) if code != 0x1B)
    assert gsm7_decode(plain) == codecs.charmap_decode(plain, "strict", table)[0]
