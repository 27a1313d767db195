#!/usr/bin/env python3
"""The original design's best variant, for comparison: asyncio.start_server, 64 KiB
reads, plain file writes, Semaphore(100); answers "{}\\n" after the upload is stored.

    python3 peer_asyncio64k.py PORT ROOT
"""
import asyncio, os, sys, uuid

async def main(port, root):
    os.makedirs(root, exist_ok=True)
    sem = asyncio.Semaphore(100)
    async def handle(r, w):
        async with sem:
            path = os.path.join(root, uuid.uuid4().hex)
            with open(path, "wb") as f:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    f.write(data)
        w.write(b"{}\n")
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
