"""+CME ERROR codes and their texts (AT+CMEE=2): the one table of them.

3GPP TS 27.007 §9.2 for the general codes; Quectel's FILE error table (400-426)
for the file commands and the storage under them (emulator.storage.vfs.FileError
carries these numbers); the GNSS codes 501-549 of the GNSS AT Commands Manual; the TCP/IP and SSL codes 550-574 of the EC2x SSL note (§5), which
AT+QIGETERROR prints too.  The FILE table is Quectel's as Quectel's own host
driver decodes it (GitHub quectel-develop/user-friendly-project,
quectel/modules/bg95/bg95_filesystem.c, at_file_errcode_parse); the manual's PDF
table itself could not be consulted.  There is no 404 and no 408.
A profile may add or override texts in its [cme_text] table.
"""
from __future__ import annotations

CME_TEXT = {
    0: "phone failure", 1: "no connection to phone", 3: "operation not allowed",
    4: "operation not supported", 10: "SIM not inserted", 13: "SIM failure",
    14: "SIM busy", 20: "memory full", 21: "invalid index", 22: "not found",
    23: "memory failure", 24: "text string too long", 25: "invalid characters in text string",
    30: "no network service", 31: "network timeout", 50: "incorrect parameters",
    58: "invalid command line", 100: "unknown",
    # Quectel file system (LTE Standard FILE application note)
    400: "invalid input value", 401: "larger than the size of the file", 402: "read zero byte",
    403: "drive full", 405: "file not found", 406: "invalid file name", 407: "file already existed",
    409: "fail to write the file", 410: "fail to open the file",
    411: "fail to read the file", 413: "reach the max number of file allowed to be opened",
    414: "the file read-only", 416: "invalid file descriptor", 417: "fail to list the file",
    418: "fail to delete the file", 419: "fail to get disk info", 420: "no space",
    421: "time out", 423: "file too large", 425: "invalid parameter", 426: "file already opened",
    # Quectel GNSS (GNSS AT Commands Manual's <errcode> table, its spelling)
    501: "Invalid parameter", 502: "Operation not supported", 503: "GNSS subsystem busy",
    504: "Session is ongoing", 505: "Session not active", 506: "Operation timeout",
    507: "Function not enabled", 508: "Time information error", 512: "Validity time is out of range",
    513: "Internal resource error", 514: "GNSS locked", 515: "End by E911", 516: "Not fixed now",
    517: "CMUX port is not opened", 549: "Unknown error",
    # Quectel TCP/IP and SSL (EC2x SSL Application Note §5; AT+QIGETERROR prints the same texts)
    550: "unknown error", 551: "operation blocked", 552: "invalid parameter", 553: "memory not enough",
    554: "create socket failed", 555: "operation not supported", 556: "socket bind failed",
    557: "socket listen failed", 558: "socket write failed", 559: "socket read failed",
    560: "socket accept failed", 561: "open PDP context failed", 562: "close PDP context failed",
    563: "socket identity has been used", 564: "DNS busy", 565: "DNS parse failed",
    566: "socket connection failed", 567: "socket has been closed", 568: "operation busy",
    569: "operation timeout", 570: "PDP context break down", 571: "cancel send",
    572: "operation not allowed", 573: "APN not configured", 574: "port busy",
}


def cme_text(code: int, profile=None) -> str:
    if profile is not None:
        text = (profile.get("cme_text") or {}).get(str(code))
        if text:
            return text
    return CME_TEXT.get(code, "unknown")
