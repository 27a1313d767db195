#ifndef SLUICE_LINUX_H
#define SLUICE_LINUX_H

/* Linux calls Swift's Glibc module does not show (they need _GNU_SOURCE, which the
   module is built without). Implemented in linux.c; elsewhere they fail with ENOSYS. */

/* splice(2) without offsets: moves up to `length` bytes from `input` to `output`, one of
   which is a pipe. `nonblocking` adds SPLICE_F_NONBLOCK (SPLICE_F_MOVE is always set).
   Returns the bytes moved, 0 at the input's end, or -1 with errno set. */
long sluice_splice(int input, int output, unsigned long length, int nonblocking);

/* pipe2(2) with O_NONBLOCK | O_CLOEXEC. Returns 0, or -1 with errno set. */
int sluice_pipe(int fds[2]);

/* fcntl(F_SETPIPE_SZ): asks for a pipe capacity of `size` bytes. Returns the capacity
   set, or -1 with errno set (the pipe keeps its capacity). */
int sluice_pipe_set_size(int fd, int size);

/* fcntl(F_GETPIPE_SZ): the pipe's capacity in bytes, or -1 with errno set. */
int sluice_pipe_size(int fd);

/* fallocate(2) with FALLOC_FL_KEEP_SIZE: allocates the blocks of [offset, offset + length)
   without changing the file's size. Returns 0, or -1 with errno set (EOPNOTSUPP where the
   file system cannot). */
int sluice_reserve(int fd, long long offset, long long length);

/* ioctl(FIONREAD) on a socket: the bytes in its receive queue, not yet read. Returns the
   count, or -1 with errno set. */
int sluice_bytes_queued(int fd);

#endif
