/*
 * ec2x_host.c -- an EC2x SSL socket driver the way embedded-Linux firmware writes one.
 *
 *   open(O_RDWR|O_NOCTTY|O_NONBLOCK), O_NONBLOCK cleared, cfmakeraw + VMIN=0/VTIME=1,
 *   cfsetspeed(B115200); every command ends with "\r\n" and is preceded by
 *   tcflush(TCIFLUSH) (stale URCs are dropped: the driver polls AT+QSSLRECV rather than
 *   trusting "recv" URCs); timeouts are alarm() + a flag; a line assembler splits on
 *   "\r\n" and a matcher knows OK / ERROR / +CME ERROR / "> " / CONNECT / SEND OK /
 *   SEND FAIL / NO CARRIER, handling +QSSLURC / +QSSLOPEN URCs that come in between.
 *
 * usage: ec2x_host DEV SCENARIO HOST PORT PAYLOAD_FILE CA_FILE
 *   SCENARIO buffer       CA upload (AT+QFUPL, XOR checksum checked), seclevel 1, access
 *                         mode 0, fixed-length AT+QSSLSEND in pieces, AT+QSSLRECV to 0
 *            reopen       the same, with the port closed and reopened in a "> " prompt
 *                         (abandoned half send) and between SEND OK and the read
 *            transparent  access mode 2: CONNECT, stream, +++, AT+QSSLSTATE, ATO, +++,
 *                         AT+QISWTMD 0 / 2, the port closed while online, ATO, +++, close
 *            badca        the open fails (+QSSLOPEN: <id>,<err>): AT+QIGETERROR, AT+QSSLCLOSE
 *            peerclose    the peer closes after its echo: data still read, state 4,
 *                         AT+QSSLSEND refused, AT+QSSLCLOSE
 *            peerclose_online  the same in access mode 2: the echo, then NO CARRIER
 * stdout: "STEP ..." lines, then "RESULT ok sent=N recv=N sha_sent=H sha_recv=H ..." or
 * "RESULT fail <why>" (exit 1).  stderr: the wire transcript, escaped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "sha256.h"

#define RXCAP (512 * 1024)
#define SSL_ID 4
#define CTX 1

enum { RES_TIMEOUT, RES_OK, RES_ERROR, RES_CME, RES_PROMPT, RES_CONNECT, RES_SENDOK, RES_SENDFAIL, RES_NOCARRIER };
static const char *rname[] = {"TIMEOUT", "OK", "ERROR", "+CME ERROR", "> ", "CONNECT",
                              "SEND OK", "SEND FAIL", "NO CARRIER"};

static const char *g_dev;
static int g_fd = -1;
static unsigned char g_rx[RXCAP];
static size_t g_rxlen;
static volatile sig_atomic_t g_alarm;
static int g_cme;
static char g_info[8192];
static int g_recv_urcs, g_closed_urcs, g_open_id = -1, g_open_err = -9999, g_last_recv = -1;
static int g_opens;

/* everything the server echoed, in order */
static unsigned char *g_data;
static size_t g_data_len, g_data_cap;
/* everything handed to the modem as socket data */
static sha256_ctx g_sent_sha;
static size_t g_sent;

static void on_alarm(int sig)
{
    (void)sig;
    g_alarm = 1;
}

static void arm(unsigned seconds)
{
    g_alarm = 0;
    alarm(seconds);
}

static void disarm(void)
{
    alarm(0);
}

static void msleep(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the port ---------------------------------------------------------------------------- */

static void port_open(void)
{
    struct termios t;
    int flags;

    g_fd = open(g_dev, O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (g_fd < 0)
        fail("open %s: %s", g_dev, strerror(errno));
    flags = fcntl(g_fd, F_GETFL);
    if (flags < 0 || fcntl(g_fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        fail("fcntl: %s", strerror(errno));
    if (tcgetattr(g_fd, &t) < 0)
        fail("tcgetattr: %s", strerror(errno));
    cfmakeraw(&t);
    t.c_cflag |= CLOCAL | CREAD;
    t.c_cflag &= ~CRTSCTS;
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 1; /* reads come back after 100 ms of silence */
    if (cfsetspeed(&t, B115200) < 0)
        fail("cfsetspeed: %s", strerror(errno));
    if (tcsetattr(g_fd, TCSANOW, &t) < 0)
        fail("tcsetattr: %s", strerror(errno));
    g_rxlen = 0;
}

static void port_close(void)
{
    close(g_fd);
    g_fd = -1;
    g_rxlen = 0;
}

/* one read() into the receive buffer: >0 bytes, 0 nothing within VTIME, -1 the alarm went off */
static int fill(void)
{
    ssize_t n;
    if (g_alarm)
        return -1;
    if (g_rxlen == RXCAP)
        fail("receive buffer overflow");
    n = read(g_fd, g_rx + g_rxlen, RXCAP - g_rxlen);
    if (n < 0) {
        if (errno == EINTR)
            return g_alarm ? -1 : 0;
        fail("read: %s", strerror(errno));
    }
    if (n > 0) {
        wire("<<", g_rx + g_rxlen, (size_t)n);
        g_rxlen += (size_t)n;
    }
    return (int)n;
}

static void consume(size_t n)
{
    memmove(g_rx, g_rx + n, g_rxlen - n);
    g_rxlen -= n;
}

/* write everything, however the kernel splits it */
static void write_all(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = write(g_fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                msleep(1);
                continue;
            }
            fail("write: %s", strerror(errno));
        }
        wire(">>", p, (size_t)n);
        p += n;
        len -= (size_t)n;
    }
}

/* data in small pieces, as a driver feeding a UART FIFO does */
static void write_chunked(const unsigned char *p, size_t len, size_t chunk)
{
    while (len) {
        size_t n = len < chunk ? len : chunk;
        write_all(p, n);
        p += n;
        len -= n;
    }
}

static void data_append(const unsigned char *p, size_t n)
{
    if (g_data_len + n > g_data_cap) {
        g_data_cap = (g_data_len + n) * 2 + 4096;
        g_data = realloc(g_data, g_data_cap);
        if (!g_data)
            fail("out of memory");
    }
    memcpy(g_data + g_data_len, p, n);
    g_data_len += n;
}

/* exactly n raw bytes from the port (after a +QSSLRECV header) */
static void read_raw(size_t n)
{
    while (g_rxlen < n)
        if (fill() < 0)
            fail("timeout reading %zu data bytes (%zu there)", n, g_rxlen);
    data_append(g_rx, n);
    consume(n);
}

/* ---- the line assembler ------------------------------------------------------------------ */

/* 1: a line (without its CR LF) in out; 2: the "> " prompt (want_prompt); 0: the alarm */
static int next_line(char *out, size_t cap, int want_prompt)
{
    for (;;) {
        unsigned char *end;
        size_t skip = 0;
        while (skip < g_rxlen && (g_rx[skip] == '\r' || g_rx[skip] == '\n'))
            skip++;
        consume(skip);
        if (want_prompt && g_rxlen >= 2 && g_rx[0] == '>' && g_rx[1] == ' ') {
            consume(2);
            return 2;
        }
        end = memmem(g_rx, g_rxlen, "\r\n", 2);
        if (end) {
            size_t n = (size_t)(end - g_rx), k = n < cap - 1 ? n : cap - 1;
            memcpy(out, g_rx, k);
            out[k] = 0;
            while (k && out[k - 1] == '\r') /* an echoed "AT\r" */
                out[--k] = 0;
            consume(n + 2);
            return 1;
        }
        if (fill() < 0)
            return 0;
    }
}

static int handle_urc(const char *line)
{
    int id, err;
    if (sscanf(line, "+QSSLURC: \"recv\",%d", &id) == 1) {
        g_recv_urcs++;
        return 1;
    }
    if (sscanf(line, "+QSSLURC: \"closed\",%d", &id) == 1) {
        g_closed_urcs++;
        return 1;
    }
    if (sscanf(line, "+QSSLOPEN: %d,%d", &id, &err) == 2) {
        g_open_id = id;
        g_open_err = err;
        g_opens++;
        return 1;
    }
    if (!strncmp(line, "+QIURC:", 7) || !strcmp(line, "RDY"))
        return 1;
    return 0;
}

/* the final result of a command; information text lands in g_info, +QSSLRECV data in g_data */
static int wait_result(unsigned timeout, int want_prompt)
{
    char line[2048];
    int n;
    g_info[0] = 0;
    arm(timeout);
    for (;;) {
        int r = next_line(line, sizeof line, want_prompt);
        if (r == 0) {
            disarm();
            return RES_TIMEOUT;
        }
        if (r == 2) {
            disarm();
            return RES_PROMPT;
        }
        if (!strcmp(line, "OK")) {
            disarm();
            return RES_OK;
        }
        if (!strcmp(line, "ERROR")) {
            disarm();
            return RES_ERROR;
        }
        if (sscanf(line, "+CME ERROR: %d", &g_cme) == 1) {
            disarm();
            return RES_CME;
        }
        if (!strncmp(line, "CONNECT", 7)) {
            disarm();
            return RES_CONNECT;
        }
        if (!strcmp(line, "SEND OK")) {
            disarm();
            return RES_SENDOK;
        }
        if (!strcmp(line, "SEND FAIL")) {
            disarm();
            return RES_SENDFAIL;
        }
        if (!strcmp(line, "NO CARRIER")) {
            disarm();
            return RES_NOCARRIER;
        }
        if (sscanf(line, "+QSSLRECV: %d", &n) == 1) {
            g_last_recv = n;
            if (n > 0)
                read_raw((size_t)n);
            continue;
        }
        if (handle_urc(line))
            continue;
        if (strlen(g_info) + strlen(line) + 2 < sizeof g_info) {
            strcat(g_info, line);
            strcat(g_info, "\n");
        }
    }
}

static int vcommand(unsigned timeout, int want_prompt, const char *fmt, va_list ap)
{
    char cmd[512];
    int len = vsnprintf(cmd, sizeof cmd - 2, fmt, ap);
    tcflush(g_fd, TCIFLUSH); /* whatever came unasked since the last answer is dropped */
    memcpy(cmd + len, "\r\n", 3);
    write_all(cmd, (size_t)len + 2);
    return wait_result(timeout, want_prompt);
}

static int at(unsigned timeout, const char *fmt, ...)
{
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = vcommand(timeout, 0, fmt, ap);
    va_end(ap);
    return r;
}

static int at_prompt(unsigned timeout, const char *fmt, ...)
{
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = vcommand(timeout, 1, fmt, ap);
    va_end(ap);
    return r;
}

static void expect(int got, int want, const char *what)
{
    if (got != want)
        fail("%s: %s (cme %d) where %s was expected; info [%s]", what, rname[got], g_cme, rname[want],
             g_info);
}

/* ---- the driver ---------------------------------------------------------------------------- */

static void modem_sync(void)
{
    int i;
    /* 10 s, not 2: a first answer later than the wait (a loaded machine, the emulator just
       started) came after the next command's tcflush, and every answer after it was one off
       (AT+CPIN? "answered" by ATE0's OK: "SIM not ready"). */
    for (i = 0; i < 10; i++)
        if (at(10, "AT") == RES_OK)
            break;
    if (i == 10)
        fail("the modem never answered AT");
    expect(at(5, "ATE0"), RES_OK, "ATE0");
    expect(at(5, "AT+CMEE=1"), RES_OK, "AT+CMEE=1");
}

static void bring_up(void)
{
    modem_sync();
    expect(at(5, "AT+CPIN?"), RES_OK, "AT+CPIN?");
    if (!strstr(g_info, "+CPIN: READY"))
        fail("SIM not ready: %s", g_info);
    expect(at(5, "AT+QICSGP=1,1,\"UNINET\",\"\",\"\",1"), RES_OK, "AT+QICSGP");
    expect(at(5, "AT+QIACT?"), RES_OK, "AT+QIACT?");
    if (!strstr(g_info, "+QIACT: 1,1"))
        expect(at(150, "AT+QIACT=1"), RES_OK, "AT+QIACT=1");
    step("pdp up");
}

static void upload_ca(const char *path)
{
    static unsigned char ca[32768];
    FILE *f = fopen(path, "rb");
    size_t n;
    unsigned size, sum, want = 0;
    int r;
    if (!f)
        fail("CA file %s: %s", path, strerror(errno));
    n = fread(ca, 1, sizeof ca, f);
    fclose(f);
    r = at(5, "AT+QFDEL=\"UFS:cacert.pem\"");
    if (r != RES_OK && !(r == RES_CME && g_cme == 405))
        fail("AT+QFDEL: %s %d", rname[r], g_cme);
    expect(at(10, "AT+QFUPL=\"UFS:cacert.pem\",%zu,30", n), RES_CONNECT, "AT+QFUPL");
    write_chunked(ca, n, 128);
    expect(wait_result(40, 0), RES_OK, "AT+QFUPL data");
    want = xor16(ca, n);
    {
        const char *p = strstr(g_info, "+QFUPL: ");
        if (!p || sscanf(p, "+QFUPL: %u,%x", &size, &sum) != 2)
            fail("no +QFUPL line: [%s]", g_info);
    }
    if (size != n || sum != want)
        fail("+QFUPL: %u,%x where %zu,%x was computed", size, sum, n, want);
    step("ca uploaded %zu bytes checksum %x", n, sum);
}

static void configure_ssl(int seclevel)
{
    expect(at(5, "AT+QSSLCFG=\"sslversion\",%d,4", CTX), RES_OK, "sslversion");
    expect(at(5, "AT+QSSLCFG=\"ciphersuite\",%d,0XFFFF", CTX), RES_OK, "ciphersuite");
    expect(at(5, "AT+QSSLCFG=\"seclevel\",%d,%d", CTX, seclevel), RES_OK, "seclevel");
    if (seclevel)
        expect(at(5, "AT+QSSLCFG=\"cacert\",%d,\"UFS:cacert.pem\"", CTX), RES_OK, "cacert");
    expect(at(5, "AT+QSSLCFG=\"ignorelocaltime\",%d,1", CTX), RES_OK, "ignorelocaltime");
    expect(at(5, "AT+QSSLCFG=\"sni\",%d,1", CTX), RES_OK, "sni");
}

static int g_may_fail;
static char g_extra[256];

static void ssl_open(const char *host, int port, int mode)
{
    int r;
    g_open_id = -1;
    g_open_err = -9999;
    if (mode == 2) {
        r = at(150, "AT+QSSLOPEN=1,%d,%d,\"%s\",%d,2", CTX, SSL_ID, host, port);
        expect(r, RES_CONNECT, "AT+QSSLOPEN transparent");
        step("online");
        return;
    }
    expect(at(10, "AT+QSSLOPEN=1,%d,%d,\"%s\",%d,%d", CTX, SSL_ID, host, port, mode), RES_OK, "AT+QSSLOPEN");
    /* the result comes as a URC: keep reading lines until it is there */
    arm(150);
    while (g_open_id < 0) {
        char line[512];
        if (!next_line(line, sizeof line, 0))
            fail("no +QSSLOPEN URC");
        if (!handle_urc(line))
            fail("unexpected line while opening: %s", line);
    }
    disarm();
    if (g_may_fail && g_open_id == SSL_ID)
        return;
    if (g_open_id != SSL_ID || g_open_err != 0)
        fail("+QSSLOPEN: %d,%d", g_open_id, g_open_err);
    step("connected");
}

/* read everything waiting: AT+QSSLRECV until +QSSLRECV: 0 */
static void ssl_drain(void)
{
    for (;;) {
        g_last_recv = -1;
        expect(at(10, "AT+QSSLRECV=%d,1500", SSL_ID), RES_OK, "AT+QSSLRECV");
        if (g_last_recv < 0)
            fail("AT+QSSLRECV answered OK without +QSSLRECV");
        if (g_last_recv == 0)
            return;
    }
}

/* read until `total` echoed bytes are here, polling: the "recv" URC may have been flushed */
static void ssl_collect(size_t total, unsigned seconds)
{
    time_t end = time(NULL) + seconds;
    while (g_data_len < total) {
        if (time(NULL) > end)
            fail("only %zu of %zu echoed bytes arrived", g_data_len, total);
        ssl_drain();
        if (g_data_len < total)
            msleep(50);
    }
    if (g_data_len != total)
        fail("%zu bytes echoed where %zu were sent", g_data_len, total);
}

static void ssl_send(const unsigned char *p, size_t n, size_t chunk)
{
    int r;
    expect(at_prompt(10, "AT+QSSLSEND=%d,%zu", SSL_ID, n), RES_PROMPT, "AT+QSSLSEND");
    write_chunked(p, n, chunk);
    r = wait_result(30, 0);
    expect(r, RES_SENDOK, "AT+QSSLSEND data");
    sha256_update(&g_sent_sha, p, n);
    g_sent += n;
}

/* the payload through buffer access mode in pieces of varied sizes */
static void send_pieces(const unsigned char *p, size_t n)
{
    static const size_t sizes[] = {1460, 1, 733, 1459, 64, 1000, 2, 1460, 517};
    size_t off = 0, i = 0;
    while (off < n) {
        size_t k = sizes[i++ % (sizeof sizes / sizeof sizes[0])];
        if (k > n - off)
            k = n - off;
        ssl_send(p + off, k, 61);
        off += k;
        if (g_recv_urcs) { /* a hint only: read now rather than let it pile up */
            g_recv_urcs = 0;
            ssl_drain();
        }
    }
}

static void check_state(int mode)
{
    char want[64];
    expect(at(5, "AT+QSSLSTATE=%d", SSL_ID), RES_OK, "AT+QSSLSTATE");
    if (!strstr(g_info, "\"SSLClient\""))
        fail("AT+QSSLSTATE: [%s]", g_info);
    /* ...,<local_port>,<socket_state>,<pdpctxID>,<serverID>,<access_mode>,"usbmodem",<sslctxID> */
    snprintf(want, sizeof want, ",2,1,%d,%d,\"usbmodem\",%d", SSL_ID, mode, CTX);
    if (!strstr(g_info, want))
        fail("AT+QSSLSTATE: [%s] lacks %s", g_info, want);
}

static void ssl_close(void)
{
    expect(at(30, "AT+QSSLCLOSE=%d", SSL_ID), RES_OK, "AT+QSSLCLOSE");
    step("closed");
}

/* ---- transparent mode ------------------------------------------------------------------------ */

/* stream n bytes while reading the echo, at most `window` bytes in flight; returns when all of
 * them came back.  Bytes already in the receive buffer (after CONNECT) are data. */
static void online_exchange(const unsigned char *p, size_t n, size_t chunk, size_t window)
{
    size_t sent = 0, base = g_data_len;
    unsigned char buf[4096];
    if (g_rxlen) {
        data_append(g_rx, g_rxlen);
        g_rxlen = 0;
    }
    arm(180);
    while (g_data_len - base < n) {
        int avail = 0;
        size_t got = g_data_len - base;
        if (g_alarm)
            fail("online: %zu of %zu bytes sent, %zu back", sent, n, got);
        if (sent < n && sent - (got < sent ? got : sent) < window) {
            size_t k = n - sent < chunk ? n - sent : chunk;
            write_all(p + sent, k);
            sha256_update(&g_sent_sha, p + sent, k);
            g_sent += k;
            sent += k;
        }
        if (ioctl(g_fd, FIONREAD, &avail) < 0)
            fail("FIONREAD: %s", strerror(errno));
        if (avail > 0 || sent == n || sent - got >= window) {
            ssize_t r = read(g_fd, buf, sizeof buf); /* VTIME: at most 100 ms */
            if (r < 0 && errno != EINTR)
                fail("read: %s", strerror(errno));
            if (r > 0) {
                size_t need = n - (g_data_len - base), k = (size_t)r < need ? (size_t)r : need;
                data_append(buf, k);
                memcpy(g_rx + g_rxlen, buf + k, (size_t)r - k); /* e.g. NO CARRIER after the data */
                g_rxlen += (size_t)r - k;
            }
        }
    }
    disarm();
    if (g_data_len - base != n)
        fail("online: %zu bytes back where %zu were sent", g_data_len - base, n);
}

/* guard time, "+++", guard time, OK */
static void escape(void)
{
    msleep(1300);
    tcflush(g_fd, TCIFLUSH);
    write_all("+++", 3);
    expect(wait_result(15, 0), RES_OK, "+++");
    step("escaped");
}

static unsigned char *load(const char *path, size_t *len)
{
    struct stat st;
    unsigned char *buf;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) < 0)
        fail("payload %s: %s", path, strerror(errno));
    buf = malloc((size_t)st.st_size + 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        fail("payload %s: short read", path);
    fclose(f);
    *len = (size_t)st.st_size;
    return buf;
}

static void reopen(const char *why)
{
    step("port closed (%s)", why);
    port_close();
    msleep(600); /* the modem sees the hang-up */
    port_open();
    modem_sync();
    step("port reopened");
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    const char *scenario, *host;
    unsigned char *payload;
    size_t len;
    int port;
    char sha_sent[65], sha_recv[65];

    if (argc != 7) {
        fprintf(stderr, "usage: %s DEV SCENARIO HOST PORT PAYLOAD CA\n", argv[0]);
        return 2;
    }
    g_dev = argv[1];
    scenario = argv[2];
    host = argv[3];
    port = atoi(argv[4]);
    payload = load(argv[5], &len);
    setvbuf(stderr, NULL, _IOFBF, 1 << 16);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: a blocked read() returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sha256_init(&g_sent_sha);

    port_open();
    bring_up();
    upload_ca(argv[6]);
    configure_ssl(1);

    if (!strcmp(scenario, "buffer")) {
        ssl_open(host, port, 0);
        check_state(0);
        send_pieces(payload, len);
        ssl_collect(g_sent, 60);
        check_state(0);
        ssl_close();
    } else if (!strcmp(scenario, "reopen")) {
        size_t half = len / 2;
        ssl_open(host, port, 0);
        send_pieces(payload, half);
        /* a send abandoned half-way: the prompt, 300 of 1000 bytes, then the port closes */
        expect(at_prompt(10, "AT+QSSLSEND=%d,1000", SSL_ID), RES_PROMPT, "AT+QSSLSEND (abandoned)");
        write_chunked((const unsigned char *)"ABANDONED-", 10, 10);
        write_chunked(payload, 290, 29);
        tcdrain(g_fd);
        reopen("inside a > prompt");
        check_state(0);
        send_pieces(payload + half, len - half);
        /* SEND OK read, the echo's "recv" URC not: close and reopen again */
        reopen("echo unread");
        ssl_collect(g_sent, 60);
        ssl_close();
    } else if (!strcmp(scenario, "transparent")) {
        size_t a = len / 2, b = len / 4, c = len / 8, d = len - a - b - c;
        ssl_open(host, port, 2);
        online_exchange(payload, a, 509, 32768);
        escape();
        check_state(2);
        expect(at(10, "ATO"), RES_CONNECT, "ATO");
        step("online again");
        online_exchange(payload + a, b, 1024, 32768);
        escape();
        expect(at(10, "AT+QISWTMD=%d,0", SSL_ID), RES_OK, "AT+QISWTMD=0");
        check_state(0);
        send_pieces(payload + a + b, c);
        ssl_collect(g_sent, 60);
        expect(at(10, "AT+QISWTMD=%d,2", SSL_ID), RES_CONNECT, "AT+QISWTMD=2");
        step("online by AT+QISWTMD");
        /* stream some, then the port closes while online; the echo waits for ATO */
        write_chunked(payload + a + b + c, d, 300);
        sha256_update(&g_sent_sha, payload + a + b + c, d);
        g_sent += d;
        tcdrain(g_fd);
        reopen("while online");
        expect(at(10, "ATO"), RES_CONNECT, "ATO after reopen");
        if (g_rxlen) { /* the echo that waited came right after CONNECT */
            data_append(g_rx, g_rxlen);
            g_rxlen = 0;
        }
        arm(60);
        while (g_data_len < g_sent) {
            unsigned char buf[4096];
            ssize_t r = read(g_fd, buf, sizeof buf);
            if (g_alarm)
                fail("after ATO: %zu of %zu bytes", g_data_len, g_sent);
            if (r > 0)
                data_append(buf, (size_t)r);
        }
        disarm();
        escape();
        check_state(2);
        ssl_close();
    } else if (!strcmp(scenario, "badca")) {
        int code = -1;
        const char *p;
        g_may_fail = 1;
        ssl_open(host, port, 0);
        expect(at(5, "AT+QIGETERROR"), RES_OK, "AT+QIGETERROR");
        if (!(p = strstr(g_info, "+QIGETERROR: ")) || sscanf(p, "+QIGETERROR: %d", &code) != 1)
            fail("AT+QIGETERROR: [%s]", g_info);
        expect(at(10, "AT+QSSLCLOSE=%d", SSL_ID), RES_OK, "AT+QSSLCLOSE after a failed open");
        snprintf(g_extra, sizeof g_extra, " open_err=%d qigeterror=%d", g_open_err, code);
    } else if (!strcmp(scenario, "peerclose") || !strcmp(scenario, "peerclose_online")) {
        int online = !strcmp(scenario, "peerclose_online"), i;
        char want[64];
        ssl_open(host, port, online ? 2 : 0);
        if (online) {
            online_exchange(payload, len, 700, 32768);
            expect(wait_result(60, 0), RES_NOCARRIER, "the peer's close while online");
            step("no carrier");
        } else {
            send_pieces(payload, len);
            ssl_collect(g_sent, 60);
        }
        /* the socket is closing (4) until AT+QSSLCLOSE; the access mode stays */
        snprintf(want, sizeof want, ",4,1,%d,%d,\"usbmodem\",%d", SSL_ID, online ? 2 : 0, CTX);
        for (i = 0; i < 300; i++) {
            expect(at(5, "AT+QSSLSTATE=%d", SSL_ID), RES_OK, "AT+QSSLSTATE");
            if (strstr(g_info, want))
                break;
            msleep(100);
        }
        if (i == 300)
            fail("AT+QSSLSTATE never showed %s: [%s]", want, g_info);
        if (!online) {
            ssl_drain(); /* nothing more, and still readable without an error */
            expect(at_prompt(10, "AT+QSSLSEND=%d,10", SSL_ID), RES_ERROR, "AT+QSSLSEND after the peer's close");
        }
        ssl_close();
    } else {
        fail("unknown scenario %s", scenario);
    }

    sha256_hex(&g_sent_sha, sha_sent);
    sha256_of(g_data, g_data_len, sha_recv);
    if (g_sent != g_data_len || strcmp(sha_sent, sha_recv))
        fail("echo differs: sent %zu sha %s, back %zu sha %s", g_sent, sha_sent, g_data_len, sha_recv);
    expect(at(5, "AT+QSSLSTATE"), RES_OK, "AT+QSSLSTATE (all)");
    if (strstr(g_info, "SSLClient"))
        fail("a socket is still listed after the close: [%s]", g_info);
    port_close();
    printf("RESULT ok sent=%zu recv=%zu sha_sent=%s sha_recv=%s opens=%d closed_urcs=%d%s\n", g_sent,
           g_data_len, sha_sent, sha_recv, g_opens, g_closed_urcs, g_extra);
    fflush(stderr);
    return 0;
}
