/*
 * A sender for bench/collect.py that sends like libtlsrpt inside Postfix: one sendto()
 * per datagram on an AF_UNIX SOCK_DGRAM socket, blocking, or with MSG_DONTWAIT where a
 * full receiver queue (EAGAIN) loses the datagram.
 *
 *   libtlsrpt_sender SOCKET DATAGRAMS PICKS [RATE]
 *
 * DATAGRAMS holds the distinct datagrams, each as a 4-byte big-endian length and the
 * bytes; PICKS the sending order as 2-byte big-endian indexes into them. RATE 0 (default)
 * sends blocking as fast as the receiver takes them; RATE > 0 sends non-blocking at RATE
 * datagrams per second. Prints one JSON line with what it did.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

static unsigned char *slurp(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size + 1);
    if (!data || fread(data, 1, *size, f) != (size_t)*size) { perror(path); exit(1); }
    fclose(f);
    return data;
}

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s SOCKET DATAGRAMS PICKS [RATE]\n", argv[0]);
        return 2;
    }
    double rate = argc > 4 ? atof(argv[4]) : 0.0;
    long size, npicks;
    unsigned char *data = slurp(argv[2], &size);
    unsigned char *picks = slurp(argv[3], &npicks);
    npicks /= 2;
    long count = 0;
    for (long pos = 0; pos + 4 <= size; count++)
        pos += 4 + ((long)data[pos] << 24 | (long)data[pos + 1] << 16
                    | (long)data[pos + 2] << 8 | data[pos + 3]);
    unsigned char **ptr = malloc(count * sizeof *ptr);
    size_t *len = malloc(count * sizeof *len);
    for (long i = 0, pos = 0; i < count; i++) {
        len[i] = (size_t)data[pos] << 24 | (size_t)data[pos + 1] << 16
               | (size_t)data[pos + 2] << 8 | data[pos + 3];
        ptr[i] = data + pos + 4;
        pos += 4 + len[i];
    }

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }

    long sent = 0, dropped = 0, failed = 0;
    int flags = rate > 0 ? MSG_DONTWAIT : 0;
    struct timespec begin, due;
    clock_gettime(CLOCK_MONOTONIC, &begin);
    double started = now_real();
    for (long index = 0; index < npicks; index++) {
        long which = (long)picks[2 * index] << 8 | picks[2 * index + 1];
        if (rate > 0) {
            double at = index / rate;
            due.tv_sec = begin.tv_sec + (time_t)at;
            due.tv_nsec = begin.tv_nsec + (long)((at - (time_t)at) * 1e9);
            if (due.tv_nsec >= 1000000000L) { due.tv_sec++; due.tv_nsec -= 1000000000L; }
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR) {}
        }
        if (sendto(fd, ptr[which], len[which], flags, (struct sockaddr *)&addr,
                   sizeof addr) < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) dropped++;
            else failed++;
        } else {
            sent++;
        }
    }
    double finished = now_real();
    printf("{\"sent\": %ld, \"dropped\": %ld, \"failed\": %ld, \"started\": %.6f, "
           "\"finished\": %.6f}\n", sent, dropped, failed, started, finished);
    return 0;
}
