/* The floor: a WebSocket fan-out server in C that does nothing a server could skip.
 *
 * One thread, epoll, one Redis pub/sub connection. GET /ws?tools=T upgrades and
 * subscribes the connection to T (SUBSCRIBE at Redis on T's first subscriber; the
 * plain peers' {"type":"subscribed"} frame once Redis confirms). Each pub/sub message
 * is framed once and written with one send() per subscriber; what a socket does not
 * take waits in that connection's buffer (EPOLLOUT), and a connection with more than
 * 4 MiB waiting is cut. Client frames are skipped unread, except that a close frame is
 * answered (RFC 6455 asks that much); no keepalive, no auth, no history, no JSON. Any
 * other GET answers 200 "ok" (the suite polls /readyz).
 *
 *   floor_server PORT REDIS_HOST REDIS_PORT
 *
 * It is not a product: it is the least work any server must do for the suite's
 * scenarios on this machine, so that a peer's cost can be read against it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 8192
#define MAX_WAITING (4 << 20)
#define BUCKETS 4096

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* SHA-1 and base64, for Sec-WebSocket-Accept (RFC 6455 section 4.2.2). */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t padded = ((len + 8) / 64 + 1) * 64;
    unsigned char *msg = calloc(padded, 1);
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t block = 0; block < padded; block += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++) {
            const unsigned char *p = msg + block + 4 * i;
            w[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        }
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 20; i++) out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char table[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = table[(v >> 18) & 63];
        out[o++] = table[(v >> 12) & 63];
        out[o++] = i + 1 < len ? table[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? table[v & 63] : '=';
    }
    out[o] = 0;
}

/* Connections and channels. */

struct conn {
    int fd;
    int upgraded;
    struct channel *channel;
    int slot; /* index in channel->subs */
    char *in;
    size_t inlen;
    char *out;
    size_t outlen, outcap;
    unsigned char head[14]; /* a client frame's header, while it arrives */
    int headlen;
    uint64_t skip; /* payload bytes of the current client frame still to skip */
};

struct channel {
    char *name;
    struct channel *next; /* hash chain */
    struct conn **subs;
    int nsubs, cap;
    int confirmed; /* Redis answered SUBSCRIBE */
};

static int ep, redis_fd;
static struct channel *table[BUCKETS];

static unsigned hash(const char *s, size_t n) {
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % BUCKETS;
}

static struct channel *lookup(const char *name, size_t n, int create) {
    unsigned b = hash(name, n);
    for (struct channel *c = table[b]; c; c = c->next)
        if (strlen(c->name) == n && !memcmp(c->name, name, n)) return c;
    if (!create) return NULL;
    struct channel *c = calloc(1, sizeof *c);
    c->name = strndup(name, n);
    c->next = table[b];
    table[b] = c;
    return c;
}

static void watch(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Cut a connection. It is freed after the current batch of epoll events, which may
 * still name it. */
static struct conn **graveyard;
static size_t ngraves, gravecap;

static void drop(struct conn *c) {
    if (c->fd < 0) return;
    if (c->channel) {
        struct channel *ch = c->channel;
        struct conn *last = ch->subs[--ch->nsubs];
        ch->subs[c->slot] = last;
        last->slot = c->slot;
        c->channel = NULL;
    }
    close(c->fd);
    c->fd = -1;
    if (ngraves == gravecap) {
        gravecap = gravecap ? gravecap * 2 : 64;
        graveyard = realloc(graveyard, sizeof *graveyard * gravecap);
    }
    graveyard[ngraves++] = c;
}

static void bury(void) {
    for (size_t i = 0; i < ngraves; i++) {
        free(graveyard[i]->in);
        free(graveyard[i]->out);
        free(graveyard[i]);
    }
    ngraves = 0;
}

/* Write what the socket takes now; keep the rest. Returns 0 when the connection was cut. */
static int deliver(struct conn *c, const char *data, size_t len) {
    if (c->outlen == 0) {
        ssize_t sent = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent == (ssize_t)len) return 1;
        if (sent < 0 && errno != EAGAIN) {
            drop(c);
            return 0;
        }
        if (sent > 0) data += sent, len -= (size_t)sent;
        watch(c, EPOLLIN | EPOLLOUT);
    }
    if (c->outlen + len > MAX_WAITING) {
        drop(c);
        return 0;
    }
    if (c->outlen + len > c->outcap) {
        c->outcap = (c->outlen + len) * 2;
        c->out = realloc(c->out, c->outcap);
    }
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
    return 1;
}

static size_t ws_frame(char *out, const char *payload, size_t len) {
    size_t head;
    out[0] = (char)0x81; /* FIN + text */
    if (len < 126) {
        out[1] = (char)len;
        head = 2;
    } else if (len < 65536) {
        out[1] = 126;
        out[2] = (char)(len >> 8);
        out[3] = (char)len;
        head = 4;
    } else {
        out[1] = 127;
        for (int i = 0; i < 8; i++) out[2 + i] = (char)((uint64_t)len >> (56 - 8 * i));
        head = 10;
    }
    memcpy(out + head, payload, len);
    return head + len;
}

static void send_subscribed(struct conn *c) {
    char payload[512], frame[600];
    int n = snprintf(payload, sizeof payload, "{\"type\": \"subscribed\", \"tool\": \"%s\"}",
                     c->channel->name);
    deliver(c, frame, ws_frame(frame, payload, (size_t)n));
}

static void redis_command(const char *verb, const char *arg) {
    char buf[600];
    int n = snprintf(buf, sizeof buf, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(verb), verb,
                     strlen(arg), arg);
    if (write(redis_fd, buf, (size_t)n) != n) die("redis write");
}

/* HTTP: /readyz (or anything) answers 200; /ws?tools=T with a key upgrades. */
static void handle_head(struct conn *c) {
    char *key = NULL, *line = strstr(c->in, "\r\n");
    for (char *p = line; p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, "Sec-WebSocket-Key:", 18)) {
            key = p + 20;
            while (*key == ' ') key++;
        }
    char *tools = strstr(c->in, "tools=");
    if (!key || !tools || tools > line) {
        static const char ok[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        if (send(c->fd, ok, sizeof ok - 1, MSG_NOSIGNAL) < 0) { /* closing anyway */ }
        drop(c);
        return;
    }
    size_t keylen = strcspn(key, " \r"), toollen = strcspn(tools + 6, " &,");
    char accept_in[128], accept[64], reply[256];
    unsigned char digest[20];
    int n = snprintf(accept_in, sizeof accept_in, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                     (int)(keylen < 64 ? keylen : 64), key);
    sha1((unsigned char *)accept_in, (size_t)n, digest);
    base64(digest, 20, accept);
    n = snprintf(reply, sizeof reply,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                 accept);
    c->upgraded = 1;
    if (!deliver(c, reply, (size_t)n)) return;
    struct channel *ch = lookup(tools + 6, toollen, 1);
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap ? ch->cap * 2 : 16;
        ch->subs = realloc(ch->subs, sizeof *ch->subs * (size_t)ch->cap);
    }
    c->channel = ch;
    c->slot = ch->nsubs;
    ch->subs[ch->nsubs++] = c;
    free(c->in); /* key and tools pointed into it */
    c->in = NULL;
    if (ch->confirmed) send_subscribed(c);
    else if (ch->nsubs == 1) redis_command("SUBSCRIBE", ch->name);
}

/* Client frames: skip each one's payload; answer a close frame and hang up. */
static void skip_frames(struct conn *c, const unsigned char *data, size_t len) {
    while (len > 0) {
        if (c->skip > 0) {
            size_t n = c->skip < len ? (size_t)c->skip : len;
            c->skip -= n, data += n, len -= n;
            continue;
        }
        c->head[c->headlen++] = *data++, len--;
        if (c->headlen < 2) continue;
        int size = c->head[1] & 127;
        int need = 2 + (size == 126 ? 2 : size == 127 ? 8 : 0) + (c->head[1] & 128 ? 4 : 0);
        if (c->headlen < need) continue;
        if ((c->head[0] & 15) == 8) {
            static const char close_frame[] = {(char)0x88, 0};
            deliver(c, close_frame, sizeof close_frame);
            if (c->fd >= 0 && c->outlen == 0) shutdown(c->fd, SHUT_WR);
            return;
        }
        uint64_t payload = (uint64_t)size;
        if (size >= 126) {
            payload = 0;
            for (int i = 2; i < (size == 126 ? 4 : 10); i++) payload = payload << 8 | c->head[i];
        }
        c->skip = payload;
        c->headlen = 0;
    }
}

static void on_client(struct conn *c, uint32_t events) {
    if (c->fd < 0) return; /* cut earlier in this batch */
    if (events & EPOLLOUT) {
        ssize_t sent = send(c->fd, c->out, c->outlen, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN) return drop(c);
        if (sent > 0) {
            memmove(c->out, c->out + sent, c->outlen - (size_t)sent);
            c->outlen -= (size_t)sent;
        }
        if (c->outlen == 0) watch(c, EPOLLIN);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    if (c->upgraded) {
        static char data[65536];
        ssize_t got = read(c->fd, data, sizeof data);
        if (got == 0 || (got < 0 && errno != EAGAIN)) drop(c);
        else if (got > 0) skip_frames(c, (unsigned char *)data, (size_t)got);
        return;
    }
    if (!c->in) c->in = malloc(MAX_HEAD + 1);
    ssize_t got = read(c->fd, c->in + c->inlen, MAX_HEAD - c->inlen);
    if (got <= 0) {
        if (got == 0 || errno != EAGAIN) drop(c);
        return;
    }
    c->inlen += (size_t)got;
    c->in[c->inlen] = 0;
    if (strstr(c->in, "\r\n\r\n")) handle_head(c);
    else if (c->inlen == MAX_HEAD) drop(c);
}

/* Redis: a RESP2 reader for the arrays pub/sub sends (bulk strings and integers). */

static char *rbuf;
static size_t rlen, rcap;

/* Parse one element at *p; returns its length (-1 for an integer) or -2 if incomplete. */
static long element(char **p, char *end, char **value) {
    char *eol = memmem(*p, (size_t)(end - *p), "\r\n", 2);
    if (!eol) return -2;
    char kind = **p;
    long n = strtol(*p + 1, NULL, 10);
    if (kind == ':') {
        *p = eol + 2;
        return -1;
    }
    if (kind != '$') die("redis: unexpected element");
    if (eol + 2 + n + 2 > end) return -2;
    *value = eol + 2;
    *p = eol + 2 + n + 2;
    return n;
}

static void on_message(struct channel *ch, char *payload, long len) {
    static char *frame;
    static size_t framecap;
    if ((size_t)len + 10 > framecap) {
        framecap = (size_t)len + 10;
        frame = realloc(frame, framecap);
    }
    size_t flen = ws_frame(frame, payload, (size_t)len);
    /* Backwards: a cut connection swaps the last one, already served, into its slot. */
    for (int i = ch->nsubs - 1; i >= 0; i--) deliver(ch->subs[i], frame, flen);
}

static void on_redis(void) {
    if (rcap - rlen < 65536) {
        rcap = rcap ? rcap * 2 : 1 << 20;
        rbuf = realloc(rbuf, rcap);
    }
    ssize_t got = read(redis_fd, rbuf + rlen, rcap - rlen);
    if (got <= 0) die("redis read");
    rlen += (size_t)got;
    char *p = rbuf, *end = rbuf + rlen;
    while (p < end) {
        char *start = p, *kind, *name, *payload = NULL;
        char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) break;
        if (*p != '*') die("redis: unexpected reply");
        long count = strtol(p + 1, NULL, 10);
        p = eol + 2;
        long klen = element(&p, end, &kind), nlen = -2, plen = -2;
        if (klen >= 0) nlen = element(&p, end, &name);
        if (nlen >= 0 && count == 3) plen = element(&p, end, &payload);
        if (klen == -2 || nlen == -2 || plen == -2) {
            p = start; /* incomplete: wait for more */
            break;
        }
        struct channel *ch = lookup(name, (size_t)nlen, 0);
        if (!ch) continue;
        if (klen == 7 && !memcmp(kind, "message", 7)) {
            on_message(ch, payload, plen);
        } else if (klen == 9 && !memcmp(kind, "subscribe", 9) && !ch->confirmed) {
            ch->confirmed = 1;
            for (int i = ch->nsubs - 1; i >= 0; i--) send_subscribed(ch->subs[i]);
        }
    }
    rlen = (size_t)(end - p);
    memmove(rbuf, p, rlen);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor_server PORT REDIS_HOST REDIS_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");

    redis_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in raddr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &raddr.sin_addr) != 1) die("redis host (an IPv4 address)");
    if (connect(redis_fd, (struct sockaddr *)&raddr, sizeof raddr) < 0) die("redis connect");
    setsockopt(redis_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &redis_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, redis_fd, &ev);
    struct epoll_event ready[512];
    for (;;) {
        int n = epoll_wait(ep, ready, 512, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            void *who = ready[i].data.ptr;
            if (who == &redis_fd) {
                on_redis();
            } else if (who == &lfd) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
            } else {
                on_client(who, ready[i].events);
            }
        }
        bury();
    }
}
