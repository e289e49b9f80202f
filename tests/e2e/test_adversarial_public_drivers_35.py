"""Adversarial tests: a thirty-fifth set of public host code pointed at the pty -- two drivers that
open an EC2x-class TCP socket in DIRECT PUSH access mode (AT+QIOPEN=1,<id>,"TCP",...,0,1) and take
the pushed data out of the byte stream themselves, replayed against the emulator's exact bytes
(now `\\r\\n+QIURC: "recv",<id>,<len>\\r\\n<data>\\r\\n`, as a real module writes them) with each
driver's own framing arithmetic, read chunking and buffers, against a loopback TCP peer that
"tcp.example":7000 is routed to.  (A search of tests/ for "Cellular_BG96InputBufferCallback",
"prvParseDirectPushURCPrefix", "_preprocessInputBuffer", "at_recv_data" and "socket_down_str"
finds nothing; test_adversarial_public_drivers_34.py only cites the first port's suffixLength.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):
- FreeRTOS/FreeRTOS-Cellular-Interface-Reference-Quectel-BG96 (MIT; source/cellular_bg96_urc_handler.c
  at 0e5f3beffd24, source/cellular_bg96.h, source/cellular_bg96_api.c buildSocketConnect:
  "AT+QIOPEN=<ctx>,<id>,"TCP","<ip>",<port>,<localport>,<dataMode>" ended "\\r") with the common
  library's pktio (FreeRTOS/FreeRTOS-Cellular-Interface source/cellular_pktio.c, the version with
  the input-buffer callback, store id 183241090) and at_core (Cellular_ATGetNextTok: strtok on
  ',', a leading ',' an empty token; Cellular_ATStrtoi: strtol, the whole token or an error).
  With CELLULAR_BG96_SUPPPORT_DIRECT_PUSH_SOCKET, pktio hands every read -- leading CR / LF
  skipped, NUL-terminated -- to Cellular_BG96InputBufferCallback first: fewer than 15 bytes, or
  no '+QIURC: "recv",' anywhere in it (strstr) -> PREFIX_MISMATCH (pktio parses lines); else
  prvParseDirectPushURCPrefix: the first line (up to CR or LF) longer than 24 bytes -> INVALID_DATA
  (the read buffer is wiped), no line end yet -> SIZE_MISMATCH (kept, called again with more);
  prefixLength = line + 2, the 2nd ','-token the socket index (< 12), the 3rd the length (an empty
  rest: buffer-mode URC, PREFIX_MISMATCH); prefix + len + suffixLength (2) beyond the read ->
  SIZE_MISMATCH; else prvStoreDirectPushSocketData copies the <len> bytes into the socket's
  2048-byte buffer if (2048 - held) > len (else FAILURE: wiped) and the whole prefix + data + 2 is
  consumed.  pktio then goes on with what follows WITHOUT skipping CR / LF again (a line of its
  own: an empty line with no command pending is AT_UNDEFINED; with no undefined-response callback
  registered -- the port registers none -- the read buffer is wiped); lines with a prefix are
  URCs ('+QIURC: "closed",<id>' -> the socket's closed callback).
- An RT-Thread application's Quectel EC2x AT layer (app_at.c, store id 68296914575; the store did
  not name the repository; AT+QNTP / AT+QFTP* / +CMTI users, 230400 baud).  at_creat_socket_connect:
  "AT+QIOPEN=1,<id-1>,"TCP","<addr>",<port>,0,1\\r\\n".  The UART's rx indication stamps a tick;
  a timer hook releases the parser once no byte came for more than a tick; the parse thread zeroes
  the 4224-byte at_buf, reads what is there and calls at_recv_data(buf, n): a do-while loop of
  strstr(index, '+QIURC: "recv"') -> sscanf '+QIURC: "recv",%d,%d', the data at that hit + 19 +
  (digits of len) (a one-digit id assumed), memcpy(len) into a message for the socket's queue,
  index += len + 16; then strstr(index, '+QIURC: "closed"') -> a "+QIURC:" message (sizeof 8,
  with its NUL) queued; +CMTI / +CMGR / +CMT (none here); the loop runs again only while the LAST
  search (+CMT:) found something; whatever is left from `index` goes to the ring buffer that the
  command waits (at_cmd_send_syn, strstr "OK" / "ERROR") read.

Both drivers frame a push exactly by its length, so the emulator's bytes are checked here with
the drivers' own arithmetic: what each one's socket buffer / queue ends up holding.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.e2e.socket_support import TCP_HOST, TCP_PORT

OPEN = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,1'
MESSAGES = [b"hello", b"\r\nstarts and ends with CR LF\r\n",
            b'x\r\n+QIURC: "recv",0,5\r\nfake!\x00\xff', b"A" * 1460]


def _push(data: bytes, cid: int = 0) -> bytes:
    return b'\r\n+QIURC: "recv",%d,%d\r\n' % (cid, len(data)) + data + b"\r\n"


CLOSED = b'\r\n+QIURC: "closed",0\r\n'


# == the emulator side ============================================================================
@pytest.fixture
def pushed(net, ec2x, peer_factory, strict_log):
    """Open socket 0 in direct push mode as both drivers do, have the peer send MESSAGES 250 ms
    apart (so each is its own push) and close; return every byte the module wrote after the
    +QIOPEN answer, up to and including the "closed" URC."""
    peer = peer_factory()
    assert ec2x.at(OPEN) == b"\r\nOK\r\n"
    assert ec2x.read_until(b"+QIOPEN: 0,0\r\n", timeout=10) == b"\r\n+QIOPEN: 0,0\r\n"
    assert peer.accepted.wait(5)
    for msg in MESSAGES:
        peer.send(msg)
        time.sleep(0.25)
    peer.close()
    return ec2x.read_until(CLOSED, timeout=10)


# == driver 1: the FreeRTOS BG96 reference port + common pktio ===================================
PREFIX = b'+QIURC: "recv",'
PREFIX_LEN, PREFIX_MAX_LEN = 15, 24
NUM_SOCKET_MAX, PUSH_BUFFER_SIZE = 12, 2048
OK, PREFIX_MISMATCH, SIZE_MISMATCH, INVALID_DATA, FAILURE = "OK", "PREFIX", "SIZE", "INVALID", "FAIL"


def c_str(buf: bytes) -> bytes:
    """What C string functions see: up to the first NUL."""
    n = buf.find(b"\0")
    return buf if n < 0 else buf[:n]


def get_next_tok(s: bytes):
    """Cellular_ATGetNextTok -> (ok, token, rest)."""
    if not s:
        return False, b"", s                      # validateString: an empty string is refused
    if s[:1] == b",":
        tok, after = b"", s[1:]
        return True, tok, after                   # (the rest after the emptied delimiter)
    stripped = s.lstrip(b",")
    if not stripped:
        return False, b"", s
    cut = stripped.find(b",")
    tok = stripped if cut < 0 else stripped[:cut]
    rest = b"" if cut < 0 or cut + 1 >= len(stripped) else stripped[cut + 1:]
    return True, tok, rest


def at_strtoi(tok: bytes):
    m = re.match(rb"[ \t\n\v\f\r]*[+-]?\d+", tok)
    end = m.end() if m else 0
    if end != len(tok):
        return False, 0
    return True, int(tok) if m else 0


class FreeRtosBg96:
    """pktio's _handleAllReceived with the BG96 input-buffer callback; no command pending (the
    pushes come while the application waits), no undefined-response callback."""

    def __init__(self, connected=(0,)) -> None:
        self.partial = b""
        self.state = {i: (i in connected) for i in range(NUM_SOCKET_MAX)}
        self.buffer = {i: bytearray() for i in range(NUM_SOCKET_MAX)}
        self.ready = []                            # data-ready callbacks (socket index)
        self.urcs: list[bytes] = []                # lines handed to the URC handlers
        self.wiped: list[bytes] = []               # what a buffer wipe threw away
        self.statuses: list[str] = []

    # -- the port's callback --------------------------------------------------------------------
    def _parse_prefix(self, buf: bytes):
        i = 0
        while i < len(buf) and buf[i:i + 1] not in (b"\r", b"\n"):
            i += 1
        if i > PREFIX_MAX_LEN:
            return INVALID_DATA, 0, 0, 0
        if i >= len(buf):
            return SIZE_MISMATCH, 0, 0, 0
        line = c_str(buf[:i])
        prefix_length = i + 2
        ok, _tok, rest = get_next_tok(line)
        sock = 0
        if ok:
            ok, tok, rest = get_next_tok(rest)
        if ok:
            ok, value = at_strtoi(tok)
            if ok:
                if 0 <= value < NUM_SOCKET_MAX:
                    sock = value
                else:
                    ok = False
        if not rest:
            return PREFIX_MISMATCH, 0, 0, 0
        length = 0
        if ok:
            ok, tok, rest = get_next_tok(rest)
        if ok:
            ok, value = at_strtoi(tok)
            if ok and value >= 0:
                length = value
            else:
                ok = False
        return (OK if ok else FAILURE), prefix_length, sock, length

    def _callback(self, buf: bytes):
        if len(buf) < PREFIX_LEN or PREFIX not in c_str(buf):
            return PREFIX_MISMATCH, 0
        status, prefix_length, sock, length = self._parse_prefix(buf)
        if status != OK:
            return status, 0
        if prefix_length + length + 2 > len(buf):
            return SIZE_MISMATCH, 0
        if not self.state[sock]:
            return OK, prefix_length + length + 2          # discarded, but handled
        held = self.buffer[sock]
        if PUSH_BUFFER_SIZE - len(held) > length:
            held += buf[prefix_length:prefix_length + length]
            self.ready.append(sock)
            return OK, prefix_length + length + 2
        return FAILURE, 0

    # -- pktio ----------------------------------------------------------------------------------
    def _wipe(self, rest: bytes) -> None:
        self.wiped.append(rest)
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        buf = self.partial + chunk
        self.partial = b""
        while True:
            while buf[:1] in (b"\r", b"\n") and buf:
                buf = buf[1:]
            status, handled = self._callback(buf)
            self.statuses.append(status)
            if status == OK:
                buf = buf[handled:]
            elif status == PREFIX_MISMATCH:
                pass
            elif status == SIZE_MISMATCH:
                self.partial = buf
                return
            else:
                self._wipe(buf)
                return
            if not buf:                                        # _preprocessLine: nothing left
                return
            end = next((k for k, c in enumerate(buf) if c in (0, 13, 10)), None)
            if end is None:                                    # not a complete line yet
                self.partial = buf
                return
            line = buf[:end]
            if b":" in c_str(line):                            # a prefix: AT_UNSOLICITED
                self.urcs.append(line)
                if line.startswith(b'+QIURC: "closed",'):
                    ok, sock = at_strtoi(line.split(b",")[1])
                    if ok:
                        self.state[sock] = False
            else:                                              # AT_UNDEFINED, no callback
                self._wipe(buf)
                return
            buf = buf[end + 1:]

    def drain(self, sock: int = 0) -> bytes:
        """Cellular_SocketRecv in direct-push mode: the socket buffer's bytes, emptied."""
        out = bytes(self.buffer[sock])
        self.buffer[sock].clear()
        return out


def _urc_chunks(transcript: bytes) -> list[bytes]:
    """The transcript cut at each URC's start -- how a UART delivers pushes that came 250 ms
    apart (cut by the lengths each URC announces: the third message holds a fake header)."""
    sizes = [len(_push(m)) for m in MESSAGES] + [len(CLOSED)]
    assert sum(sizes) == len(transcript)
    out, at = [], 0
    for n in sizes:
        out.append(transcript[at:at + n])
        at += n
    return out


EXPECTED = b"".join(_push(m) for m in MESSAGES) + CLOSED


def test_emulator_push_bytes_are_the_real_module_framing(pushed):
    """The bytes both drivers get: each message its own URC, <len> bytes then CR LF, the peer's
    close last."""
    assert pushed == EXPECTED


def test_freertos_bg96_one_push_per_read_fills_the_socket_buffer_exactly(pushed):
    """Pushes that arrive 250 ms apart are separate reads: the callback consumes header + data +
    2 each time, nothing is left over, the application drains each message as its data-ready
    callback fires, and '+QIURC: "closed",0' reaches the URC handler (socket closed)."""
    drv = FreeRtosBg96()
    got = []
    for chunk in _urc_chunks(pushed):
        drv.feed(chunk)
        got.append(drv.drain())
    assert got == MESSAGES + [b""]
    assert drv.ready == [0, 0, 0, 0]
    assert drv.urcs == [b'+QIURC: "closed",0']
    assert drv.state[0] is False
    assert drv.wiped == [] and drv.partial == b""


def test_freertos_bg96_byte_per_read_and_every_two_way_split(pushed):
    """A push split across reads: SIZE_MISMATCH keeps the partial line / data and the callback is
    called again with more.  Fed one byte per read, and each push split in two at EVERY offset
    (inside the header, the data, between the data and its CR LF, between CR and LF), the socket
    buffer gets each message exactly, nothing is wiped and nothing stays partial."""
    drv = FreeRtosBg96()
    for i in range(len(pushed)):
        drv.feed(pushed[i:i + 1])
    assert drv.drain() == b"".join(MESSAGES)
    assert drv.urcs == [b'+QIURC: "closed",0'] and drv.wiped == [] and drv.partial == b""
    for push, msg in zip(_urc_chunks(pushed), MESSAGES):
        for cut in range(1, len(push)):
            drv = FreeRtosBg96()
            drv.feed(push[:cut])
            drv.feed(push[cut:])
            assert (cut, drv.drain()) == (cut, msg)
            assert drv.wiped == [] and drv.partial == b"" and drv.ready == [0]


def test_freertos_bg96_burst_in_one_read_keeps_the_first_push_only(pushed):
    """All of it in ONE read (the application slow to run pktio): the callback consumes the first
    push exactly (header + 5 + 2); pktio then takes the next URC's leading CR LF as an empty line
    -- AT_UNDEFINED with no command pending -- and wipes the read buffer: the later pushes and the
    "closed" URC are lost.  That is this driver on a real module too (a real module writes the same
    CR LF before every URC); the emulator's bytes give exactly that, no more, no less."""
    drv = FreeRtosBg96()
    drv.feed(pushed)
    assert drv.drain() == b"hello"
    assert drv.urcs == []
    assert drv.wiped == [pushed[len(_push(b"hello")):]]
    assert drv.state[0] is True
    # two pushes per read: the second is lost each time, the third is whole again
    drv = FreeRtosBg96()
    chunks = _urc_chunks(pushed)
    drv.feed(chunks[0] + chunks[1])
    drv.feed(chunks[2])
    assert drv.drain() == MESSAGES[0] + MESSAGES[2]


def test_freertos_bg96_push_without_trailing_crlf_would_stall():
    """The same model against the framing the emulator wrote before (no CR LF after the data):
    the last push of a burst never completes -- the callback wants 2 more bytes -- until the next
    URC comes, whose leading CR LF it then eats.  (Shows the model checks the suffix count.)"""
    drv = FreeRtosBg96()
    drv.feed(b'\r\n+QIURC: "recv",0,5\r\nhello')
    assert drv.drain() == b"" and drv.statuses[-1] == SIZE_MISMATCH
    assert drv.partial == b'+QIURC: "recv",0,5\r\nhello'


def test_freertos_bg96_header_longer_than_24_is_invalid_data():
    """prvParseDirectPushURCPrefix refuses a header line over 24 bytes (a UDP SERVICE's push,
    with its address and port, is one): INVALID_DATA, the read buffer wiped.  The emulator's TCP
    client headers stay within it even at 4 digits and a 2-digit id."""
    drv = FreeRtosBg96(connected=(11,))
    header = b'+QIURC: "recv",11,1460'
    assert len(header) <= PREFIX_MAX_LEN
    drv.feed(b"\r\n" + header + b"\r\n" + b"B" * 1460 + b"\r\n")
    assert drv.drain(11) == b"B" * 1460
    drv = FreeRtosBg96()
    udp = b'\r\n+QIURC: "recv",0,5,"127.0.0.1",40000\r\nhello\r\n'
    drv.feed(udp)
    assert drv.drain() == b"" and drv.wiped == [udp[2:]]


# == driver 2: the RT-Thread app_at.c at_recv_data =================================================
AT_BUFF_SIZE = 4224


class RtThreadAtRecv:
    def __init__(self) -> None:
        self.queues: dict[int, list[bytes]] = {0: [], 1: []}      # socket_qh[], both registered
        self.ring = bytearray()

    def at_recv_data(self, chunk: bytes) -> None:
        at_buf = chunk + b"\0" * (AT_BUFF_SIZE + 64 - len(chunk))   # memset(at_buf, 0) first
        rev_len = len(chunk)
        index = 0

        def strstr(start: int, needle: bytes):
            hay = c_str(at_buf[start:])
            k = hay.find(needle)
            return None if k < 0 else start + k

        while True:
            p = strstr(index, b'+QIURC: "recv"')
            if p is not None:
                m = re.match(rb'\+QIURC: "recv",([+-]?\d+),([+-]?\d+)', c_str(at_buf[p:]))
                cid, length = int(m.group(1)), int(m.group(2))
                offset = 1 if length < 10 else 2 if length < 100 else 3 if length < 1000 else 4
                p += 19 + offset
                data = at_buf[p:p + length]
                if self.queues.get(cid) is not None:
                    self.queues[cid].append(data)
                index += length + 16
            p = strstr(index, b'+QIURC: "closed"')
            if p is not None:
                m = re.match(rb'\+QIURC: "closed",([+-]?\d+)', c_str(at_buf[p:]))
                cid = int(m.group(1))
                if self.queues.get(cid) is not None:
                    self.queues[cid].append(b"+QIURC:\0")
            p = strstr(index, b"+CMTI:")
            p = strstr(index, b"+CMGR:")
            p = strstr(index, b"+CMT:")
            if p is None:
                break
        self.ring += at_buf[index:rev_len]


def test_rtthread_app_at_pushes_apart_each_reach_the_socket_queue(pushed):
    """One push per idle-gap read: the data at hit + 19 + digits(len) is exactly each message (the
    third one's NUL and fake header included: memcpy, not a string copy); index += len + 16 stops
    5 + digits(len) bytes before the data's end, so that tail and the push's CR LF go to the
    command ring buffer (for "hello" also the header's LF); the "closed" read queues "+QIURC:"
    and, index never moved, leaves the whole URC in the ring."""
    drv = RtThreadAtRecv()
    for chunk in _urc_chunks(pushed):
        drv.at_recv_data(chunk)
    assert drv.queues[0] == MESSAGES + [b"+QIURC:\0"]
    assert drv.queues[1] == []
    assert bytes(drv.ring) == (b"\nhello\r\n" + b"CR LF\r\n\r\n" + b"fake!\x00\xff\r\n"
                               + b"A" * 9 + b"\r\n" + CLOSED)


def test_rtthread_app_at_burst_in_one_read_loses_the_later_pushes(pushed):
    """Everything in one read (the code means to handle pushes that come within 10 ms, "防止多条数据
    10ms内同时到达"): the first push is taken; the loop only turns again when "+CMT:" was found,
    so pushes 2-4 are never queued and, with the "closed" URC, land in the command ring buffer
    from index 21 on; and the "closed" search (strstr) stops at the NUL inside the third message,
    so the close is not queued either -- the driver's own limits, the same on a real module."""
    drv = RtThreadAtRecv()
    drv.at_recv_data(pushed)
    assert drv.queues[0] == [b"hello"]
    assert bytes(drv.ring) == pushed[21:]
    assert bytes(drv.ring).startswith(b"\nhello\r\n\r\n+QIURC: \"recv\",0,30\r\n")


# == more than one push's worth at once ===========================================================
def _split_pushes(transcript: bytes) -> list[bytes]:
    """The transcript as whole push URCs, framing checked strictly (header, <len> bytes, CR LF)."""
    out, at = [], 0
    head = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
    while at < len(transcript):
        m = head.match(transcript, at)
        assert m, transcript[at:at + 40]
        end = m.end() + int(m.group(1))
        assert transcript[end:end + 2] == b"\r\n"
        out.append(transcript[at:end + 2])
        at = end + 2
    return out


def test_freertos_bg96_4240_bytes_at_once_split_in_pushes_of_at_most_1500(net, ec2x, peer_factory,
                                                                        strict_log):
    """4240 bytes in one send: the module pushes them in URCs of at most 1500 bytes (recv_max),
    each header within the port's 24-byte line limit.  Read one push per read and drained by the
    application each time, the socket gets the 4240 bytes in order.  All in one read, pktio
    keeps the first push only (the next URC's CR LF is an empty, undefined line: wiped); one per
    read but never drained, the second does not fit the 2048-byte buffer ((2048 - 1500) > n
    fails) and is wiped -- the port's own limits, the same on a real module."""
    peer = peer_factory()
    assert ec2x.at(OPEN) == b"\r\nOK\r\n"
    assert ec2x.read_until(b"+QIOPEN: 0,0\r\n", timeout=10) == b"\r\n+QIOPEN: 0,0\r\n"
    payload = bytes(range(256)) * 15 + b"\r\n" * 20 + b"end!" * 90   # 3840 + 40 + 360
    assert len(payload) == 4240
    peer.send(payload)
    transcript = b""
    deadline = time.monotonic() + 10
    while sum(int(m.group(1)) for m in re.finditer(rb'\+QIURC: "recv",0,(\d+)\r\n', transcript)) \
            < len(payload) or not transcript.endswith(b"\r\n"):
        assert time.monotonic() < deadline, transcript[-80:]
        ec2x._fill()
        transcript = bytes(ec2x.pending)
    time.sleep(0.3)
    ec2x._fill()
    transcript = bytes(ec2x.pending)
    pushes = _split_pushes(transcript)
    sizes = [int(re.match(rb'\r\n\+QIURC: "recv",0,(\d+)', p).group(1)) for p in pushes]
    assert all(0 < n <= 1500 for n in sizes) and sum(sizes) == len(payload)
    assert all(len(p.split(b"\r\n")[1]) <= PREFIX_MAX_LEN for p in pushes)
    drv = FreeRtosBg96()
    got = b""
    for p in pushes:
        drv.feed(p)
        got += drv.drain()
    assert got == payload and drv.wiped == [] and drv.partial == b""
    assert len(pushes) >= 3
    # all of it in one read: the first push, then the next URC's CR LF as an empty line: wiped
    drv = FreeRtosBg96()
    drv.feed(transcript)
    assert drv.drain() == payload[:sizes[0]]
    assert drv.wiped == [transcript[len(pushes[0]):]]
    # one push per read but never drained: a push that does not fit what is left of the 2048
    # bytes is a FAILURE and the read is wiped; the buffer keeps what it had
    drv = FreeRtosBg96()
    for p in pushes:
        drv.feed(p)
    kept, held = [], 0
    for p, n in zip(pushes, sizes):
        if PUSH_BUFFER_SIZE - held > n:
            held += n
            kept.append(True)
        else:
            kept.append(False)
    assert drv.wiped == [p[2:] for p, k in zip(pushes, kept) if not k]
    assert drv.drain() == b"".join(p[-2 - n:-2] for p, n, k in zip(pushes, sizes, kept) if k)
    assert sizes[0] == 1500 and kept[:2] == [True, False]


def test_freertos_bg96_socket_11_longest_header_fits_the_24_byte_line(net, ec2x, peer_factory,
                                                                     strict_log):
    """The port's socket ids go to CELLULAR_NUM_SOCKET_MAX - 1 = 11, the EC2x's last connectID:
    the longest TCP push header the module writes, '+QIURC: "recv",11,1460' (22 bytes), is within
    prvParseDirectPushURCPrefix's 24; fed split at every offset, socket 11 gets the data exactly."""
    peer = peer_factory()
    line = OPEN.replace("AT+QIOPEN=1,0,", "AT+QIOPEN=1,11,")
    assert ec2x.at(line) == b"\r\nOK\r\n"
    assert ec2x.read_until(b"+QIOPEN: 11,0\r\n", timeout=10) == b"\r\n+QIOPEN: 11,0\r\n"
    data = bytes((7 * i) & 0xFF for i in range(1460))
    peer.send(data)
    push = b'\r\n+QIURC: "recv",11,1460\r\n' + data + b"\r\n"
    assert ec2x.read_exactly(len(push), timeout=10) == push
    assert ec2x.quiet_for(0.3) == b""
    for cut in list(range(1, 40)) + list(range(len(push) - 40, len(push))):
        drv = FreeRtosBg96(connected=(11,))
        drv.feed(push[:cut])
        drv.feed(push[cut:])
        assert (cut, drv.drain(11)) == (cut, data)
        assert drv.wiped == [] and drv.partial == b""
