#!/usr/bin/env python3
"""The original upload-server design, as a benchmark peer for Sluice.

One TCP connection = one upload: the server reads until the client half-closes, writing
every read into its own file, under asyncio.Semaphore(100); then it writes one receipt
line ({"bytes": N, "path": ...}) and closes, the same protocol as Sluice's tcp stream
framing. Variants:

  --read-size 1024 --writer aiofile    the design as it was written
  --read-size 65536 --writer plain     its best variant (64 KiB reads, plain blocking writes)
  --uvloop                             either of the above on uvloop

Prints "listening on HOST:PORT" once bound.
"""
import argparse
import asyncio
import itertools
import json
import os
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--dir", required=True, help="directory the files are written into")
    p.add_argument("--read-size", type=int, default=1024)
    p.add_argument("--writer", choices=["aiofile", "plain"], default="aiofile")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--semaphore", type=int, default=100)
    p.add_argument("--backlog", type=int, default=4096)
    return p.parse_args()


async def main(args):
    os.makedirs(args.dir, exist_ok=True)
    sem = asyncio.Semaphore(args.semaphore)
    counter = itertools.count()
    if args.writer == "aiofile":
        from aiofile import async_open

    async def handle(reader, writer):
        n = next(counter)
        path = os.path.join(args.dir, f"upload-{os.getpid()}-{n}")
        total = 0
        try:
            async with sem:
                if args.writer == "aiofile":
                    async with async_open(path, "wb") as f:
                        while True:
                            data = await reader.read(args.read_size)
                            if not data:
                                break
                            await f.write(data)
                            total += len(data)
                else:
                    with open(path, "wb") as f:
                        while True:
                            data = await reader.read(args.read_size)
                            if not data:
                                break
                            f.write(data)
                            total += len(data)
            writer.write((json.dumps({"bytes": total, "path": path}) + "\n").encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    server = await asyncio.start_server(handle, args.host, args.port, backlog=args.backlog)
    addr = server.sockets[0].getsockname()
    print(f"listening on {addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args()
    try:
        if args.uvloop:
            import uvloop
            uvloop.install()
        asyncio.run(main(args))
    except KeyboardInterrupt:
        sys.exit(0)
