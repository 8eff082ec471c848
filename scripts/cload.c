/* Closed-loop HTTP/1.1 keep-alive load generator (a stand-in for wrk where wrk is absent).
 * cload PORT CONNECTIONS SECONDS REQUEST_FILE  -> prints "requests N non2xx N seconds S p50_us X p99_us Y"
 * REQUEST_FILE holds the whole raw request (head + body). One thread, epoll. Responses must
 * carry Content-Length (no chunked bodies) and fit in 64 KiB: what the bench's servers send.
 * Only responses completed within SECONDS count; latency is send to last byte. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { int fd; size_t sent; size_t got; char buf[65536]; double t0; } conn_t;
static char *req; static size_t reqlen;
static double *lat; static size_t nlat, caplat; static long non2xx;

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static int open_conn(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); exit(2); }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

static void send_req(conn_t *c) {
  c->sent = 0; c->got = 0; c->t0 = now();
  ssize_t n = write(c->fd, req, reqlen);
  if (n < 0) { perror("write"); exit(2); }
  c->sent = (size_t)n;
  if (c->sent < reqlen) { fprintf(stderr, "short write\n"); exit(2); }
}

/* returns 1 when a full response is in buf */
static int complete(conn_t *c) {
  char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t head = (size_t)(end - c->buf) + 4; long clen = 0;
  for (char *p = c->buf; p < end; ) {
    char *nl = memmem(p, (size_t)(end - p), "\r\n", 2); if (!nl) nl = end;
    if ((size_t)(nl - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) clen = atol(p + 15);
    p = nl + 2;
  }
  if (c->got < head + (size_t)clen) return 0;
  if (c->got > head + (size_t)clen) { fprintf(stderr, "pipelined bytes?\n"); exit(2); }
  if (c->buf[9] != '2') non2xx++;
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: cload PORT CONNS SECONDS REQFILE\n"); return 2; }
  int port = atoi(argv[1]), nc = atoi(argv[2]); double secs = atof(argv[3]);
  FILE *f = fopen(argv[4], "rb"); fseek(f, 0, SEEK_END); reqlen = (size_t)ftell(f); rewind(f);
  req = malloc(reqlen); if (fread(req, 1, reqlen, f) != reqlen) return 2; fclose(f);
  caplat = 1 << 20; lat = malloc(caplat * sizeof *lat);
  int ep = epoll_create1(0); conn_t *cs = calloc((size_t)nc, sizeof *cs);
  for (int i = 0; i < nc; i++) {
    cs[i].fd = open_conn(port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  double start = now(), until = start + secs;
  for (int i = 0; i < nc; i++) send_req(&cs[i]);
  struct epoll_event evs[256];
  int active = nc;
  while (active > 0) {
    int n = epoll_wait(ep, evs, 256, 100);
    double t = now();
    if (n == 0 && t > until + 5) break;
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      for (;;) {
        ssize_t r = read(c->fd, c->buf + c->got, sizeof c->buf - c->got);
        if (r > 0) { c->got += (size_t)r; if (c->got == sizeof c->buf) { fprintf(stderr, "response too big\n"); exit(2); } continue; }
        if (r == 0) { fprintf(stderr, "server closed\n"); exit(2); }
        if (errno == EAGAIN) break;
        perror("read"); exit(2);
      }
      if (complete(c)) {
        double t1 = now();
        if (t1 <= until) {
          if (nlat == caplat) { caplat *= 2; lat = realloc(lat, caplat * sizeof *lat); }
          lat[nlat++] = t1 - c->t0;
          send_req(c);
        } else { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); active--; }
      }
    }
  }
  double el = secs;
  qsort(lat, nlat, sizeof *lat, cmpd);
  double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
  printf("requests %zu non2xx %ld seconds %.3f rps %.1f p50_us %.1f p99_us %.1f\n", nlat, non2xx, el, nlat / el, p50 * 1e6, p99 * 1e6);
  return 0;
}
