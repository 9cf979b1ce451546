"""Addresses as SMPP carries them: type of number, numbering plan and digits.

The router writes a number as "+digits" (E.164), a short code as its digits
and an alphanumeric sender as it is (router/senders.py tells them apart);
SMPP 3.4 carries each as addr_ton (§5.2.5), addr_npi (§5.2.6) and the
address (§5.2.8, §5.2.9) without '+'. CONTRACT §4 "Addresses" fixes which
TON and NPI we write and how we read what an ESME sends.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, TypedDict

from smsrouter.router.senders import (
    SHORT_CODE_LENGTHS,
    NumberType,
    classify_sender,
    has_letter,
    split_number,
)

from .constants import Npi, Ton

__all__ = [
    "AddressFields",
    "SmppAddress",
    "address_fields",
    "parse_smpp_address",
    "smpp_address",
]

# The TON and NPI values read and written here, as plain ints: a message's
# addresses are worked out on every submit_sm and receipt.
_TON_UNKNOWN: Final = int(Ton.UNKNOWN)
_TON_INTERNATIONAL: Final = int(Ton.INTERNATIONAL)
_TON_NETWORK_SPECIFIC: Final = int(Ton.NETWORK_SPECIFIC)
_TON_ALPHANUMERIC: Final = int(Ton.ALPHANUMERIC)
_NPI_UNKNOWN: Final = int(Npi.UNKNOWN)
_NPI_ISDN: Final = int(Npi.ISDN)

# SMPP 3.4 §4.4.1: source_addr and destination_addr are C-Octet Strings of at
# most 21 octets including the terminating NUL.
_MAX_SMPP_ADDR = 20


@dataclass(frozen=True, slots=True)
class SmppAddress:
    ton: int
    npi: int
    addr: str


def smpp_address(address: str) -> SmppAddress:
    """An address as it travels in an SMPP PDU (CONTRACT §4 "Addresses").

    International numbers: TON 1 / NPI 1, digits without '+'. Short codes:
    digits, TON 3 (network specific) / NPI 0. Alphanumeric senders: TON 5 /
    NPI 0.
    """
    digits = address[1:]
    if address[:1] == "+" and digits.isdigit() and digits.isascii():
        # Most addresses: '+' and digits, which classify_sender never takes
        # for a short code or an alphanumeric ID.
        result = SmppAddress(_TON_INTERNATIONAL, _NPI_ISDN, digits)
        if len(digits) > _MAX_SMPP_ADDR:
            raise ValueError(
                f"address longer than {_MAX_SMPP_ADDR} octets (SMPP 3.4 §4.4.1): {address!r}"
            )
        return result
    kind = classify_sender(address)
    if kind is NumberType.ALPHANUMERIC:
        result = SmppAddress(_TON_ALPHANUMERIC, _NPI_UNKNOWN, address)
    elif kind is NumberType.SHORT_CODE:
        result = SmppAddress(_TON_NETWORK_SPECIFIC, _NPI_UNKNOWN, address)
    else:
        result = SmppAddress(_TON_INTERNATIONAL, _NPI_ISDN, split_number(address)[1])
    if len(result.addr.encode()) > _MAX_SMPP_ADDR:
        raise ValueError(
            f"address longer than {_MAX_SMPP_ADDR} octets (SMPP 3.4 §4.4.1): {address!r}"
        )
    return result


def parse_smpp_address(ton: int, npi: int, addr: str) -> str:
    """An address from an ESME's PDU in the form the rest of the router uses.

    TON 1 → "+digits"; TON 5 → unchanged; short codes (5-6 digits) →
    unchanged. TON 0 (unknown) with 10 or more digits → "+digits": the
    router has no country to read a national number in, so it assumes an
    international number sent without its '+', which is what ESMEs that
    leave TON at 0 send in practice. The assumption misreads a national
    number of 10+ digits (US "4155550101" would become +41...), which is
    why it is not applied to TON 2 (national): those digits, and TON 0
    strings of other lengths, come back unchanged so that number
    validation refuses them instead of the router guessing a country.
    ``npi`` does not change the result: ESMEs set it inconsistently.
    """
    del npi
    if not addr:
        raise ValueError("empty address")
    if ton == _TON_ALPHANUMERIC or has_letter(addr):
        return addr
    plus, digits = split_number(addr)
    if ton == _TON_INTERNATIONAL or plus:
        return "+" + digits
    if len(digits) in SHORT_CODE_LENGTHS:
        return digits
    if ton == _TON_UNKNOWN and len(digits) >= 10:
        return "+" + digits
    return digits


class AddressFields(TypedDict):
    source_addr_ton: int
    source_addr_npi: int
    source_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str


def address_fields(source: str, destination: str) -> AddressFields:
    """The six address fields of a submit_sm / deliver_sm / data_sm for a
    source and destination as we write them (CONTRACT §4 "Addresses")."""
    src = _address(source)
    dst = _address(destination)
    return {
        "source_addr_ton": src.ton,
        "source_addr_npi": src.npi,
        "source_addr": src.addr,
        "dest_addr_ton": dst.ton,
        "dest_addr_npi": dst.npi,
        "destination_addr": dst.addr,
    }


# Senders are few and each sends many messages, and a receipt goes back to
# the sender of its message: worked out once each. Recipients repeat less,
# but a bounded cache costs them little.
_address = functools.lru_cache(maxsize=65536)(smpp_address)
