#define _GNU_SOURCE
#include "sluice_linux.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifdef __linux__

long sluice_splice(int input, int output, unsigned long length, int nonblocking) {
    unsigned int flags = SPLICE_F_MOVE | (nonblocking ? SPLICE_F_NONBLOCK : 0);
    return (long)splice(input, NULL, output, NULL, (size_t)length, flags);
}

int sluice_pipe(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }

int sluice_pipe_set_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }

int sluice_pipe_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }

int sluice_reserve(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int sluice_bytes_queued(int fd) {
    int count = 0;
    return ioctl(fd, FIONREAD, &count) == 0 ? count : -1;
}

#else

long sluice_splice(int input, int output, unsigned long length, int nonblocking) {
    (void)input; (void)output; (void)length; (void)nonblocking;
    errno = ENOSYS;
    return -1;
}

int sluice_pipe(int fds[2]) { (void)fds; errno = ENOSYS; return -1; }

int sluice_pipe_set_size(int fd, int size) { (void)fd; (void)size; errno = ENOSYS; return -1; }

int sluice_pipe_size(int fd) { (void)fd; errno = ENOSYS; return -1; }

int sluice_reserve(int fd, long long offset, long long length) {
    (void)fd; (void)offset; (void)length;
    errno = EOPNOTSUPP;
    return -1;
}

int sluice_bytes_queued(int fd) { (void)fd; errno = ENOSYS; return -1; }

#endif
