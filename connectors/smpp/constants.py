"""SMPP 3.4 numbers: command ids, command statuses, TLV tags and field values.

Everything here is a plain value from the SMPP v3.4 specification (Issue 1.2,
12-Oct-1999); section numbers in comments refer to that document.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

#: interface_version for SMPP 3.4 (§5.2.4).  Sent in bind_* requests and in
#: the sc_interface_version TLV of bind_*_resp.
INTERFACE_VERSION: Final = 0x34

#: Every PDU starts with the same 16-octet header (§3.2): command_length,
#: command_id, command_status, sequence_number, each a 4-octet Integer.
HEADER_SIZE: Final = 16

#: Bit 31 of command_id marks a response PDU (§5.1.2.1: a response's
#: command_id is its request's with that bit set).
RESPONSE_BIT: Final = 0x80000000

#: sequence_number range a requester may allocate (§5.1.4); 0 and the upper
#: half of the u32 space are not to be allocated, though peers do send them.
SEQUENCE_NUMBER_MIN: Final = 0x00000001
SEQUENCE_NUMBER_MAX: Final = 0x7FFFFFFF


class CommandId(IntEnum):
    """command_id values of §5.1.2.1 (Table 5-1)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(IntEnum):
    """command_status / error_status_code values of §5.1.3 (Table 5-2).

    The table reserves 0x100-0x3FF for SMPP extensions and 0x400-0x4FF for
    SMSC vendor errors; those arrive as plain ints, never as members.
    """

    ESME_ROK = 0x00000000  # No Error
    ESME_RINVMSGLEN = 0x00000001  # Message Length is invalid
    ESME_RINVCMDLEN = 0x00000002  # Command Length is invalid
    ESME_RINVCMDID = 0x00000003  # Invalid Command ID
    ESME_RINVBNDSTS = 0x00000004  # Incorrect BIND Status for given command
    ESME_RALYBND = 0x00000005  # ESME Already in Bound State
    ESME_RINVPRTFLG = 0x00000006  # Invalid Priority Flag
    ESME_RINVREGDLVFLG = 0x00000007  # Invalid Registered Delivery Flag
    ESME_RSYSERR = 0x00000008  # System Error
    ESME_RINVSRCADR = 0x0000000A  # Invalid Source Address
    ESME_RINVDSTADR = 0x0000000B  # Invalid Dest Addr
    ESME_RINVMSGID = 0x0000000C  # Message ID is invalid
    ESME_RBINDFAIL = 0x0000000D  # Bind Failed
    ESME_RINVPASWD = 0x0000000E  # Invalid Password
    ESME_RINVSYSID = 0x0000000F  # Invalid System ID
    ESME_RCANCELFAIL = 0x00000011  # Cancel SM Failed
    ESME_RREPLACEFAIL = 0x00000013  # Replace SM Failed
    ESME_RMSGQFUL = 0x00000014  # Message Queue Full
    ESME_RINVSERTYP = 0x00000015  # Invalid Service Type
    ESME_RINVNUMDESTS = 0x00000033  # Invalid number of destinations
    ESME_RINVDLNAME = 0x00000034  # Invalid Distribution List name
    ESME_RINVDESTFLAG = 0x00000040  # Destination flag is invalid (submit_multi)
    ESME_RINVSUBREP = 0x00000042  # Invalid 'submit with replace' request
    ESME_RINVESMCLASS = 0x00000043  # Invalid esm_class field data
    ESME_RCNTSUBDL = 0x00000044  # Cannot Submit to Distribution List
    ESME_RSUBMITFAIL = 0x00000045  # submit_sm or submit_multi failed
    ESME_RINVSRCTON = 0x00000048  # Invalid Source address TON
    ESME_RINVSRCNPI = 0x00000049  # Invalid Source address NPI
    ESME_RINVDSTTON = 0x00000050  # Invalid Destination address TON
    ESME_RINVDSTNPI = 0x00000051  # Invalid Destination address NPI
    ESME_RINVSYSTYP = 0x00000053  # Invalid system_type field
    ESME_RINVREPFLAG = 0x00000054  # Invalid replace_if_present flag
    ESME_RINVNUMMSGS = 0x00000055  # Invalid number of messages
    ESME_RTHROTTLED = 0x00000058  # Throttling error (ESME has exceeded allowed message limits)
    ESME_RINVSCHED = 0x00000061  # Invalid Scheduled Delivery Time
    ESME_RINVEXPIRY = 0x00000062  # Invalid message validity period (Expiry time)
    ESME_RINVDFTMSGID = 0x00000063  # Predefined Message Invalid or Not Found
    ESME_RX_T_APPN = 0x00000064  # ESME Receiver Temporary App Error Code
    ESME_RX_P_APPN = 0x00000065  # ESME Receiver Permanent App Error Code
    ESME_RX_R_APPN = 0x00000066  # ESME Receiver Reject Message Error Code
    ESME_RQUERYFAIL = 0x00000067  # query_sm request failed
    ESME_RINVOPTPARSTREAM = 0x000000C0  # Error in the optional part of the PDU Body
    ESME_ROPTPARNOTALLWD = 0x000000C1  # Optional Parameter not allowed
    ESME_RINVPARLEN = 0x000000C2  # Invalid Parameter Length
    ESME_RMISSINGOPTPARAM = 0x000000C3  # Expected Optional Parameter missing
    ESME_RINVOPTPARAMVAL = 0x000000C4  # Invalid Optional Parameter Value
    ESME_RDELIVERYFAILURE = 0x000000FE  # Delivery Failure (used for data_sm_resp)
    ESME_RUNKNOWNERR = 0x000000FF  # Unknown Error


class Tag(IntEnum):
    """Optional parameter (TLV) tags of §5.3.2 (Table 5-6).

    0x1400-0x3FFF is reserved for SMSC vendor specific TLVs; those (and any
    other unknown tag) are carried as raw octets, never as members.
    """

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


#: §5.3.2: "Reserved for SMSC Vendor specific optional parameters".
VENDOR_TAG_MIN: Final = 0x1400
VENDOR_TAG_MAX: Final = 0x3FFF


class MessageState(IntEnum):
    """message_state of §5.2.28 (query_sm_resp) and of the message_state TLV (§5.3.2)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


class Ton(IntEnum):
    """Type of Number (§5.2.5)."""

    UNKNOWN = 0
    INTERNATIONAL = 1
    NATIONAL = 2
    NETWORK_SPECIFIC = 3
    SUBSCRIBER = 4
    ALPHANUMERIC = 5
    ABBREVIATED = 6


class Npi(IntEnum):
    """Numbering Plan Indicator (§5.2.6)."""

    UNKNOWN = 0
    ISDN = 1  # E.163 / E.164
    DATA = 3  # X.121
    TELEX = 4  # F.69
    LAND_MOBILE = 6  # E.212
    NATIONAL = 8
    PRIVATE = 9
    ERMES = 10
    INTERNET = 14  # IP
    WAP_CLIENT_ID = 18


class DestFlag(IntEnum):
    """dest_flag of a submit_multi destination (§5.2.25)."""

    SME_ADDRESS = 1
    DISTRIBUTION_LIST = 2


# esm_class (§5.2.12) is three sub-fields packed in one octet.
#: Bits 1-0: messaging mode.
ESM_CLASS_MODE_MASK: Final = 0x03
ESM_CLASS_MODE_DEFAULT: Final = 0x00  # the SMSC's default mode (usually store and forward)
ESM_CLASS_MODE_DATAGRAM: Final = 0x01
ESM_CLASS_MODE_FORWARD: Final = 0x02  # transaction mode
ESM_CLASS_MODE_STORE_AND_FORWARD: Final = 0x03
#: Bits 5-2: message type.
ESM_CLASS_TYPE_MASK: Final = 0x3C
ESM_CLASS_TYPE_DEFAULT: Final = 0x00
ESM_CLASS_DELIVERY_RECEIPT: Final = 0x04  # SMSC delivery receipt (deliver_sm)
ESM_CLASS_DELIVERY_ACK: Final = 0x08  # SME delivery acknowledgement
ESM_CLASS_MANUAL_ACK: Final = 0x10  # SME manual/user acknowledgement
ESM_CLASS_CONVERSATION_ABORT: Final = 0x18  # Korean CDMA
ESM_CLASS_INTERMEDIATE_NOTIFICATION: Final = 0x20
#: Bits 7-6: GSM network specific features.
ESM_CLASS_GSM_MASK: Final = 0xC0
ESM_CLASS_UDHI: Final = 0x40  # short_message starts with a User Data Header
ESM_CLASS_REPLY_PATH: Final = 0x80

# registered_delivery (§5.2.17), bits 1-0: SMSC delivery receipt.
REGISTERED_DELIVERY_RECEIPT_MASK: Final = 0x03
REGISTERED_DELIVERY_NONE: Final = 0x00
REGISTERED_DELIVERY_ON_FINAL: Final = 0x01  # receipt on success or failure
REGISTERED_DELIVERY_ON_FAILURE: Final = 0x02
REGISTERED_DELIVERY_INTERMEDIATE: Final = 0x10  # bit 4: intermediate notification
