/*
 * cr_host.c -- a select()-based modem driver: the port stays O_NONBLOCK, termios is set field
 * by field, every wait is a select() with a deadline (CLOCK_MONOTONIC), commands end with a
 * bare "\r", nothing is ever flushed (URCs carry data here), writes handle EAGAIN and partial
 * writes by waiting for the port to be writable.
 *
 * usage: cr_host DEV ml302 HOST PORT TEXT_FILE BIN_FILE CA_FILE
 *          ML302: AT+CGDCONT/AT+CGACT, AT+QSECDEL/AT+QSECWRITE=0 of the CA (the manual's XOR
 *          checksum computed here and compared), AT+QSECREAD, AT+QSSLCFG seclevel 1,
 *          AT+QSSLOPEN connectmode 0, TEXT_FILE in Ctrl+Z-ended sends, "recv" URCs and
 *          AT+QSSLRECV until a bare OK, AT+QSSLSTATE, AT+QSSLCLOSE; then connectmode 1
 *          (CONNECT), BIN_FILE streamed and echoed, +++, AT+QSSLCLOSE
 *        cr_host DEV push HOST PORT BIN_FILE
 *          EC2x, access mode 1 (direct push): fixed-length AT+QSSLSEND of 1000-byte pieces
 *          (the test makes each begin with LF), the echo arriving as
 *          +QSSLURC: "recv",<id>,<len><CR><LF><data> between answers, AT+QSSLRECV refused
 * stdout: STEP lines, then "RESULT ok sent=N recv=N sha_sent=H sha_recv=H ..." or
 * "RESULT fail <why>" (exit 1); stderr: the wire transcript.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "sha256.h"

#define RXCAP (512 * 1024)

enum { AT_TIMEOUT, AT_OK, AT_ERROR, AT_CME, AT_PROMPT, AT_CONNECT, AT_SENDOK, AT_SENDFAIL, AT_NOCARRIER };
static const char *names[] = {"TIMEOUT", "OK", "ERROR", "+CME ERROR", "> ", "CONNECT", "SEND OK",
                              "SEND FAIL", "NO CARRIER"};

static int fd = -1;
static unsigned char rx[RXCAP];
static size_t rxlen;
static int cme;
static char info[8192];
static int ml302; /* URC and answer formats */
static int recv_urcs, close_urcs, open_id = -1, open_err = -9999, recv_len = -1;
static int pushes;
static char recv_peer[96];
static unsigned char *echo;
static size_t echo_len, echo_cap;
static sha256_ctx sent_sha;
static size_t sent_total;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pause_ms(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    select(0, NULL, NULL, NULL, &tv);
}

static void port_open(const char *dev)
{
    struct termios tio;
    fd = open(dev, O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        fail("open %s: %s", dev, strerror(errno));
    if (tcgetattr(fd, &tio) < 0)
        fail("tcgetattr: %s", strerror(errno));
    tio.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF | IXANY);
    tio.c_oflag &= ~OPOST;
    tio.c_lflag &= ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    tio.c_cflag &= ~(CSIZE | PARENB | CSTOPB | CRTSCTS);
    tio.c_cflag |= CS8 | CREAD | CLOCAL;
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    cfsetispeed(&tio, B115200);
    cfsetospeed(&tio, B115200);
    if (tcsetattr(fd, TCSANOW, &tio) < 0)
        fail("tcsetattr: %s", strerror(errno));
    rxlen = 0;
}

/* wait for input until the deadline; 1 something read, 0 deadline passed */
static int fill(double deadline)
{
    for (;;) {
        fd_set rd;
        struct timeval tv;
        double left = deadline - now();
        ssize_t n;
        int r;
        if (left <= 0)
            return 0;
        FD_ZERO(&rd);
        FD_SET(fd, &rd);
        tv.tv_sec = (long)left;
        tv.tv_usec = (long)((left - (double)tv.tv_sec) * 1e6);
        r = select(fd + 1, &rd, NULL, NULL, &tv);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fail("select: %s", strerror(errno));
        }
        if (r == 0)
            continue;
        if (rxlen == RXCAP)
            fail("receive buffer overflow");
        n = read(fd, rx + rxlen, RXCAP - rxlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            fail("read: %s", strerror(errno));
        }
        if (n == 0)
            fail("read: end of file");
        wire("<<", rx + rxlen, (size_t)n);
        rxlen += (size_t)n;
        return 1;
    }
}

static void consume(size_t n)
{
    memmove(rx, rx + n, rxlen - n);
    rxlen -= n;
}

/* the whole buffer out through a non-blocking fd: partial writes, EAGAIN -> select */
static void send_bytes(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    double deadline = now() + 120;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            fd_set wr;
            struct timeval tv = {1, 0};
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                fail("write: %s", strerror(errno));
            if (now() > deadline)
                fail("the port took no bytes for 120 s");
            FD_ZERO(&wr);
            FD_SET(fd, &wr);
            select(fd + 1, NULL, &wr, NULL, &tv);
            continue;
        }
        wire(">>", p, (size_t)n);
        p += n;
        len -= (size_t)n;
    }
}

static void echo_append(const unsigned char *p, size_t n)
{
    if (echo_len + n > echo_cap) {
        echo_cap = (echo_len + n) * 2 + 4096;
        if (!(echo = realloc(echo, echo_cap)))
            fail("out of memory");
    }
    memcpy(echo + echo_len, p, n);
    echo_len += n;
}

static void take_raw(size_t n, double deadline)
{
    while (rxlen < n)
        if (!fill(deadline))
            fail("timeout in %zu raw bytes (%zu there)", n, rxlen);
    echo_append(rx, n);
    consume(n);
}

/* 1 a line, 2 the prompt, 0 the deadline */
static int get_line(char *out, size_t cap, int prompt, double deadline)
{
    for (;;) {
        size_t skip = 0;
        unsigned char *end;
        while (skip < rxlen && (rx[skip] == '\r' || rx[skip] == '\n'))
            skip++;
        consume(skip);
        if (prompt && rxlen >= 2 && rx[0] == '>' && rx[1] == ' ') {
            consume(2);
            return 2;
        }
        if ((end = memmem(rx, rxlen, "\r\n", 2)) != NULL) {
            size_t n = (size_t)(end - rx), k = n < cap - 1 ? n : cap - 1;
            memcpy(out, rx, k);
            out[k] = 0;
            consume(n + 2);
            return 1;
        }
        if (!fill(deadline))
            return 0;
    }
}

/* URCs: 1 handled.  EC2x direct push carries its data right after the line. */
static int urc(const char *line, double deadline)
{
    int a, b;
    if (ml302 && sscanf(line, "+QSSLURC: \"recv\",%d,%d", &a, &b) == 2) {
        recv_urcs++;
        return 1;
    }
    if (!ml302 && sscanf(line, "+QSSLURC: \"recv\",%d,%d", &a, &b) == 2) {
        take_raw((size_t)b, deadline);
        pushes++;
        return 1;
    }
    if (sscanf(line, "+QSSLURC: \"close\",%d", &a) == 1 || sscanf(line, "+QSSLURC: \"closed\",%d", &a) == 1) {
        close_urcs++;
        return 1;
    }
    if (sscanf(line, "+QSSLOPEN: %d,%d", &a, &b) == 2) {
        open_id = a;
        open_err = b;
        return 1;
    }
    if (line[0] >= '0' && line[0] <= '5' && !strcmp(line + 1, ",CLOSE OK")) /* ML302, late */
        return 1;
    return 0;
}

static int result(int seconds, int prompt)
{
    char line[2048], ip[64];
    double deadline = now() + seconds;
    int n, port;
    info[0] = 0;
    for (;;) {
        int r = get_line(line, sizeof line, prompt, deadline);
        if (r == 0)
            return AT_TIMEOUT;
        if (r == 2)
            return AT_PROMPT;
        if (!strcmp(line, "OK"))
            return AT_OK;
        if (!strcmp(line, "ERROR"))
            return AT_ERROR;
        if (sscanf(line, "+CME ERROR: %d", &cme) == 1)
            return AT_CME;
        if (!strncmp(line, "CONNECT", 7))
            return AT_CONNECT;
        if (!strcmp(line, "SEND OK"))
            return AT_SENDOK;
        if (!strcmp(line, "SEND FAIL"))
            return AT_SENDFAIL;
        if (!strcmp(line, "NO CARRIER"))
            return AT_NOCARRIER;
        /* ML302: +QSSLRECV: <ipaddr>:<port>,TCP,<len> then the data */
        if (ml302 && sscanf(line, "+QSSLRECV: %63[^:]:%d,TCP,%d", ip, &port, &n) == 3) {
            snprintf(recv_peer, sizeof recv_peer, "%s:%d", ip, port);
            recv_len = n;
            take_raw((size_t)n, deadline);
            continue;
        }
        if (urc(line, deadline))
            continue;
        if (strlen(info) + strlen(line) + 2 < sizeof info) {
            strcat(info, line);
            strcat(info, "\n");
        }
    }
}

static int command(int seconds, int prompt, const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    int len;
    va_start(ap, fmt);
    len = vsnprintf(cmd, sizeof cmd - 1, fmt, ap);
    va_end(ap);
    cmd[len++] = '\r';
    send_bytes(cmd, (size_t)len);
    return result(seconds, prompt);
}

#define AT(secs, ...) command(secs, 0, __VA_ARGS__)
#define AT_PROMPTED(secs, ...) command(secs, 1, __VA_ARGS__)

static void want(int got, int expected, const char *what)
{
    if (got != expected)
        fail("%s: %s (cme %d), not %s; info [%s]", what, names[got], cme, names[expected], info);
}

/* wait for one more URC-borne event (the open's result, CLOSE OK ...) */
static void wait_open(int id, int seconds)
{
    double deadline = now() + seconds;
    char line[512];
    while (open_id < 0) {
        if (!get_line(line, sizeof line, 0, deadline))
            fail("no +QSSLOPEN");
        if (!urc(line, deadline))
            fail("unexpected line while opening: %s", line);
    }
    if (open_id != id || open_err != 0)
        fail("+QSSLOPEN: %d,%d", open_id, open_err);
}

static void wait_close_ok(int id)
{
    double deadline = now() + 30;
    char line[512], want_line[32];
    snprintf(want_line, sizeof want_line, "%d,CLOSE OK", id);
    for (;;) {
        if (!get_line(line, sizeof line, 0, deadline))
            fail("no %s", want_line);
        if (!strcmp(line, want_line))
            return;
        if (!urc(line, deadline))
            fail("unexpected line after AT+QSSLCLOSE: %s", line);
    }
}

static unsigned char *slurp(const char *path, size_t *len)
{
    struct stat st;
    unsigned char *buf;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) < 0)
        fail("%s: %s", path, strerror(errno));
    buf = malloc((size_t)st.st_size + 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        fail("%s: short read", path);
    fclose(f);
    *len = (size_t)st.st_size;
    return buf;
}

static void sync_modem(void)
{
    int i;
    /* 10 s, not 2: this host never flushes, so a first answer later than the wait (a loaded
       machine, the emulator just started) was read as the next command's and every answer
       after it was one off (AT+CGACT "answered" by AT+CGDCONT's OK). */
    for (i = 0; i < 10; i++)
        if (AT(10, "AT") == AT_OK)
            break;
    if (i == 10)
        fail("no answer to AT");
    want(AT(5, "ATE0"), AT_OK, "ATE0");
}

static void stream_online(const unsigned char *p, size_t n, size_t chunk, size_t window)
{
    size_t sent = 0, base = echo_len;
    double deadline = now() + 240;
    if (rxlen) {
        echo_append(rx, rxlen);
        rxlen = 0;
    }
    while (echo_len - base < n) {
        size_t got = echo_len - base;
        fd_set rd, wr;
        struct timeval tv = {0, 200000};
        int can_write = sent < n && sent - got < window;
        if (now() > deadline)
            fail("online: %zu sent, %zu of %zu back", sent, got, n);
        FD_ZERO(&rd);
        FD_ZERO(&wr);
        FD_SET(fd, &rd);
        if (can_write)
            FD_SET(fd, &wr);
        if (select(fd + 1, &rd, &wr, NULL, &tv) < 0) {
            if (errno == EINTR)
                continue;
            fail("select: %s", strerror(errno));
        }
        if (FD_ISSET(fd, &rd)) {
            unsigned char buf[8192];
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0)
                echo_append(buf, (size_t)r);
            else if (r < 0 && errno != EAGAIN && errno != EINTR)
                fail("read: %s", strerror(errno));
        }
        if (can_write && FD_ISSET(fd, &wr)) {
            size_t k = n - sent < chunk ? n - sent : chunk;
            ssize_t w = write(fd, p + sent, k); /* partial writes are fine: the rest next time */
            if (w > 0) {
                sha256_update(&sent_sha, p + sent, (size_t)w);
                sent_total += (size_t)w;
                sent += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR)
                fail("write: %s", strerror(errno));
        }
    }
    if (echo_len - base != n)
        fail("online: %zu back, %zu sent", echo_len - base, n);
}

static void plus_escape(void)
{
    pause_ms(1300);
    send_bytes("+++", 3);
    want(result(15, 0), AT_OK, "+++");
    step("escaped");
}

/* ---- ML302 ------------------------------------------------------------------------------------ */

static void ml302_recv_all(void)
{
    for (;;) {
        recv_len = -1;
        want(AT(10, "AT+QSSLRECV=1,0,1500"), AT_OK, "AT+QSSLRECV");
        if (recv_len < 0) /* "if no data, just OK" */
            return;
    }
}

static int run_ml302(const char *host, int port, const char *text_path, const char *bin_path,
                     const char *ca_path)
{
    size_t tlen, blen, clen, off = 0;
    unsigned char *text = slurp(text_path, &tlen), *bin = slurp(bin_path, &blen);
    unsigned char *ca = slurp(ca_path, &clen);
    unsigned size, sum;
    const char *p;
    double until;

    ml302 = 1;
    sync_modem();
    want(AT(5, "AT+CGDCONT=1,\"IP\",\"CMNET\""), AT_OK, "AT+CGDCONT");
    want(AT(30, "AT+CGACT=1,1"), AT_OK, "AT+CGACT");
    if (!strstr(info, "+CGACT: 1, 1, "))
        fail("AT+CGACT: [%s]", info);
    step("pdp up");

    want(AT(5, "AT+QSECDEL=0"), AT_OK, "AT+QSECDEL");
    want(AT_PROMPTED(5, "AT+QSECWRITE=0"), AT_PROMPT, "AT+QSECWRITE");
    for (off = 0; off < clen; off += 100)
        send_bytes(ca + off, clen - off < 100 ? clen - off : 100);
    send_bytes("\x1a", 1);
    want(result(10, 0), AT_OK, "AT+QSECWRITE data");
    if (!(p = strstr(info, "+QSECWRITE: ")) || sscanf(p, "+QSECWRITE: %u,%x", &size, &sum) != 2)
        fail("no +QSECWRITE line: [%s]", info);
    if (size != clen || sum != xor16(ca, clen))
        fail("+QSECWRITE: %u,%04x; computed %zu,%04x", size, sum, clen, xor16(ca, clen));
    {
        char four[8];
        snprintf(four, sizeof four, ",%04x", sum);
        if (!strstr(p, four))
            fail("checksum not four lower-case digits: [%s]", info);
    }
    want(AT(5, "AT+QSECREAD=0"), AT_OK, "AT+QSECREAD");
    {
        char line[64];
        snprintf(line, sizeof line, "+QSECREAD: 1,%04x", sum);
        if (!strstr(info, line))
            fail("AT+QSECREAD: [%s], expected %s", info, line);
    }
    step("ca written %u bytes checksum %04x", size, sum);

    want(AT(5, "AT+QSSLCFG=\"sslversion\",0,4"), AT_OK, "sslversion");
    want(AT(5, "AT+QSSLCFG=\"ciphersuite\",0,0XFFFF"), AT_OK, "ciphersuite");
    want(AT(5, "AT+QSSLCFG=\"seclevel\",0,1"), AT_OK, "seclevel");
    want(AT(5, "AT+QSSLCFG=\"cacert\",0,\"/caCrt.pem\""), AT_OK, "cacert");
    want(AT(5, "AT+QSSLCFG=\"ignorertctime\",1"), AT_OK, "ignorertctime");

    want(AT(10, "AT+QSSLOPEN=0,0,\"%s\",%d,0,60", host, port), AT_OK, "AT+QSSLOPEN");
    wait_open(0, 90);
    step("connected");
    for (off = 0; off < tlen;) {
        size_t k = tlen - off < 1000 ? tlen - off : 1000, i;
        want(AT_PROMPTED(10, "AT+QSSLSEND=0"), AT_PROMPT, "AT+QSSLSEND");
        for (i = 0; i < k; i += 47)
            send_bytes(text + off + i, k - i < 47 ? k - i : 47);
        send_bytes("\x1a", 1);
        want(result(30, 0), AT_SENDOK, "AT+QSSLSEND data");
        sha256_update(&sent_sha, text + off, k);
        sent_total += k;
        off += k;
        if (recv_urcs) {
            recv_urcs = 0;
            ml302_recv_all();
        }
    }
    until = now() + 60;
    while (echo_len < sent_total) {
        char line[512];
        if (now() > until)
            fail("%zu of %zu echoed", echo_len, sent_total);
        if (!recv_urcs && get_line(line, sizeof line, 0, now() + 1) == 1 && !urc(line, until))
            fail("unexpected line: %s", line);
        recv_urcs = 0;
        ml302_recv_all();
    }
    want(AT(5, "AT+QSSLSTATE"), AT_OK, "AT+QSSLSTATE");
    if (!strstr(info, "+QSSLSTATE: 0,\"TCP\",") || !strstr(info, "\"CONNECTED\""))
        fail("AT+QSSLSTATE: [%s]", info);
    want(AT(30, "AT+QSSLCLOSE=0"), AT_OK, "AT+QSSLCLOSE=0");
    wait_close_ok(0);
    step("closed 0");

    /* connectmode 1: transparent */
    want(AT(120, "AT+QSSLOPEN=1,0,\"%s\",%d,1", host, port), AT_CONNECT, "AT+QSSLOPEN transparent");
    step("online");
    stream_online(bin, blen, 700, 65536);
    plus_escape();
    want(AT(30, "AT+QSSLCLOSE=1"), AT_OK, "AT+QSSLCLOSE=1");
    wait_close_ok(1);
    step("closed 1");
    return 0;
}

/* ---- EC2x direct push, CR-only lines, data starting with LF --------------------------------- */

static int run_push(const char *host, int port, const char *bin_path)
{
    size_t blen, off;
    unsigned char *bin = slurp(bin_path, &blen);
    double until;
    sync_modem();
    want(AT(5, "AT+QICSGP=1,1,\"UNINET\",\"\",\"\",1"), AT_OK, "AT+QICSGP");
    want(AT(30, "AT+QIACT=1"), AT_OK, "AT+QIACT");
    want(AT(5, "AT+QSSLCFG=\"seclevel\",2,0"), AT_OK, "seclevel");
    want(AT(10, "AT+QSSLOPEN=1,2,3,\"%s\",%d,1", host, port), AT_OK, "AT+QSSLOPEN");
    wait_open(3, 90);
    step("connected");
    for (off = 0; off < blen;) {
        size_t k = blen - off < 1000 ? blen - off : 1000, i;
        want(AT_PROMPTED(10, "AT+QSSLSEND=3,%zu", k), AT_PROMPT, "AT+QSSLSEND");
        for (i = 0; i < k; i += 100)
            send_bytes(bin + off + i, k - i < 100 ? k - i : 100);
        want(result(30, 0), AT_SENDOK, "AT+QSSLSEND data");
        sha256_update(&sent_sha, bin + off, k);
        sent_total += k;
        off += k;
    }
    want(AT(5, "AT+QSSLRECV=3,1500"), AT_ERROR, "AT+QSSLRECV on a push socket");
    until = now() + 60;
    while (echo_len < sent_total) { /* the rest of the pushes */
        char line[512];
        if (!get_line(line, sizeof line, 0, until))
            fail("%zu of %zu echoed", echo_len, sent_total);
        if (!urc(line, until))
            fail("unexpected line: %s", line);
    }
    want(AT(5, "AT+QSSLSTATE=3"), AT_OK, "AT+QSSLSTATE");
    if (!strstr(info, ",2,1,3,1,\"usbmodem\",2"))
        fail("AT+QSSLSTATE: [%s]", info);
    want(AT(30, "AT+QSSLCLOSE=3"), AT_OK, "AT+QSSLCLOSE");
    step("closed");
    return 0;
}

int main(int argc, char **argv)
{
    char a[65], b[65];
    if (argc < 6) {
        fprintf(stderr, "usage: %s DEV ml302|push HOST PORT FILES...\n", argv[0]);
        return 2;
    }
    setvbuf(stderr, NULL, _IOFBF, 1 << 16);
    sha256_init(&sent_sha);
    port_open(argv[1]);
    if (!strcmp(argv[2], "ml302") && argc == 8)
        run_ml302(argv[3], atoi(argv[4]), argv[5], argv[6], argv[7]);
    else if (!strcmp(argv[2], "push") && argc == 6)
        run_push(argv[3], atoi(argv[4]), argv[5]);
    else
        fail("bad arguments");
    sha256_hex(&sent_sha, a);
    sha256_of(echo, echo_len, b);
    if (sent_total != echo_len || strcmp(a, b))
        fail("echo differs: sent %zu %s, back %zu %s", sent_total, a, echo_len, b);
    close(fd);
    printf("RESULT ok sent=%zu recv=%zu sha_sent=%s sha_recv=%s pushes=%d close_urcs=%d peer=%s\n",
           sent_total, echo_len, a, b, pushes, close_urcs, recv_peer[0] ? recv_peer : "-");
    fflush(stderr);
    return 0;
}
