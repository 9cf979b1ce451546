"""Short message content as 3GPP defines it, whatever carries it: the GSM 7-bit
default alphabet and UCS-2 (TS 23.038), the user data header, segmentation and
reassembly of concatenated messages (TS 23.040). Both the router's decisions
(counting parts, reassembling MO) and the SMPP edges use it; it imports neither.
"""
