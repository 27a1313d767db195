/*
 * The floor for the TCP section: how little CPU the kernel leaves a server that does the
 * same job as the asyncio peers (one connection = one upload into its own file, a receipt
 * line back, close) with nothing else: one thread, epoll, no buffers beyond one, no
 * limits, no timeouts, no temporary names, no metrics, no error handling past giving up.
 * It is not a product and has no goals; it shows which part of a row's CPU is the
 * kernel's (TCP receive, page cache, file create/link/close) and so what a goal that is a
 * fraction of a peer's CPU leaves for everything else.
 *
 *   floor_server PORT DIR splice   socket -> 1 MiB pipe -> file (splice(2)), as Sluice does
 *   floor_server PORT DIR copy     read(2) 64 KiB, write(2): the asyncio 64 KiB variant's calls
 *
 * Files are anonymous (O_TMPFILE) until the upload ends, then linked in as "floor-N".
 * Prints "listening on 127.0.0.1:PORT" once bound. Linux only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    int sock, file, pipe[2];
    long long bytes;
} upload;

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void finish(int dir, upload *u, long id) {
    char path[64], name[64], receipt[96];
    snprintf(path, sizeof path, "/proc/self/fd/%d", u->file);
    snprintf(name, sizeof name, "floor-%ld", id);
    if (linkat(AT_FDCWD, path, dir, name, AT_SYMLINK_FOLLOW) != 0) fail("linkat");
    int n = snprintf(receipt, sizeof receipt, "{\"bytes\": %lld, \"path\": \"%s\"}\n", u->bytes, name);
    if (write(u->sock, receipt, n) != n) { /* the client left: nothing to tell it */ }
    close(u->file);
    close(u->sock);
    if (u->pipe[0] >= 0) { close(u->pipe[0]); close(u->pipe[1]); }
    free(u);
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[3], "splice") && strcmp(argv[3], "copy"))) {
        fprintf(stderr, "usage: %s PORT DIR splice|copy\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), splicing = !strcmp(argv[3], "splice");
    int dir = open(argv[2], O_DIRECTORY | O_RDONLY);
    if (dir < 0) fail("open dir");
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (void *)&address, sizeof address) || listen(listener, 1024)) fail("bind");
    printf("listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    int poller = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    static char buffer[65536];
    struct epoll_event events[256];
    long next_id = 0;
    for (;;) {
        int ready = epoll_wait(poller, events, 256, -1);
        for (int i = 0; i < ready; i++) {
            upload *u = events[i].data.ptr;
            if (!u) {
                int sock;
                while ((sock = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    u = calloc(1, sizeof *u);
                    u->sock = sock;
                    u->pipe[0] = u->pipe[1] = -1;
                    u->file = openat(dir, ".", O_TMPFILE | O_WRONLY, 0644);
                    if (u->file < 0) fail("openat");
                    if (splicing) {
                        if (pipe2(u->pipe, O_NONBLOCK)) fail("pipe2");
                        fcntl(u->pipe[1], F_SETPIPE_SZ, 1 << 20);
                    }
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = u};
                    epoll_ctl(poller, EPOLL_CTL_ADD, sock, &e);
                }
                continue;
            }
            /* Read until the socket is empty (EAGAIN) or ends (0: the client half-closed). */
            for (;;) {
                ssize_t n;
                if (splicing) {
                    n = splice(u->sock, NULL, u->pipe[1], NULL, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                    for (ssize_t left = n; left > 0;) {
                        ssize_t moved = splice(u->pipe[0], NULL, u->file, NULL, left, SPLICE_F_MOVE);
                        if (moved <= 0) fail("splice into the file");
                        left -= moved;
                    }
                } else {
                    n = read(u->sock, buffer, sizeof buffer);
                    if (n > 0 && write(u->file, buffer, n) != n) fail("write");
                }
                if (n > 0) { u->bytes += n; continue; }
                if (n == 0) {
                    epoll_ctl(poller, EPOLL_CTL_DEL, u->sock, NULL);
                    finish(dir, u, next_id++);
                } else if (errno != EAGAIN) {
                    /* A reset: drop the upload (its anonymous file goes with the descriptor). */
                    close(u->file);
                    close(u->sock);
                    if (u->pipe[0] >= 0) { close(u->pipe[0]); close(u->pipe[1]); }
                    free(u);
                }
                break;
            }
        }
    }
}
