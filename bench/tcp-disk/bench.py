#!/usr/bin/env python3
"""TCP -> disk figures for the sluice server (release build).

    python3 bench/tcp-disk/bench.py throughput [--count 16 --size 16MiB]
    python3 bench/tcp-disk/bench.py slow       [--count 256 --seconds 40]
    python3 bench/tcp-disk/bench.py trickle    [--count 10000 --seconds 30]

PEER=asyncio64k runs the same clients against peer_asyncio64k.py (throughput mode).
SLUICE_BIN picks another sluice binary (default .build/release/sluice).

Each mode starts `.build/release/sluice serve` on its own config in a temp dir,
drives it with asyncio clients (sendfile for bulk), and prints server CPU seconds
(utime+stime from /proc/PID/stat), RSS (VmRSS, sampled every 0.2 s) and outcome.
"""
import argparse, asyncio, os, resource, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, ".build/release/sluice"))
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
TICK = os.sysconf("SC_CLK_TCK")

def size(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if text.endswith(u):
            return int(float(text[: -len(u)]) * m)
    return int(text)

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def switches(pid):
    """Context switches of all the server's threads (a proxy for thread hops and wake-ups)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{t}/status"):
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        except OSError:
            pass
    return total

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Server:
    def __init__(self, work, stages="", tcp_extra=""):
        self.port = free_port()
        self.root = os.path.join(work, "data")
        cfg = os.path.join(work, "sluice.yaml")
        with open(cfg, "w") as f:
            f.write(f"""log_level: warning
listeners:
  tcp:
    type: tcp
    listen: 127.0.0.1:{self.port}
    pipeline: p
    max_connections: 30000
    idle_timeout: 300s
{tcp_extra}
pipelines:
  p:
    stages: [{stages}]
    sink:
      type: disk
      root: {self.root}
      name: "{{name}}"
      on_conflict: unique
""")
        cmd = [BIN, "serve", "--config", cfg]
        if os.environ.get("PEER") == "asyncio64k":
            cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_asyncio64k.py"), str(self.port), self.root]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, "server.log"), "w"),
                                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD)))
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close(); break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        self.pid = self.proc.pid
        self.peak = rss(self.pid)
        self.sampling = True

    async def sample(self):
        while self.sampling:
            self.peak = max(self.peak, rss(self.pid))
            await asyncio.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill(); self.proc.wait()

async def upload(port, path, n, results):
    loop = asyncio.get_running_loop()
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    with open(path, "rb") as f:
        await loop.sendfile(w.transport, f, 0, n)
    w.write_eof()
    line = await r.readline()
    results.append(b'"error"' not in line and line.startswith(b"{"))
    w.close()

async def throughput(a):
    n = size(a.size)
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        src = "/dev/shm/sluice-bench-src"
        if not os.path.exists(src) or os.path.getsize(src) < n:
            with open(src, "wb") as f:
                left = n
                while left:
                    k = min(left, 1 << 24); f.write(os.urandom(k)); left -= k
        srv = Server(work, tcp_extra=f"    max_concurrent_uploads: {max(a.count, 256)}\n")
        base = rss(srv.pid)
        sampler = asyncio.ensure_future(srv.sample())
        c0, t0, s0 = cpu(srv.pid), time.time(), switches(srv.pid)
        results = []
        await asyncio.gather(*(upload(srv.port, src, n, results) for _ in range(a.count)))
        dt, dc, ds = time.time() - t0, cpu(srv.pid) - c0, switches(srv.pid) - s0
        srv.sampling = False; await sampler
        total = n * a.count
        gib = total / (1 << 30)
        ok = sum(results)
        print(f"throughput {a.count} x {a.size}: {total / dt / 1e6:.0f} MB/s, server {dc:.2f} CPU-s = {dc / gib:.2f} CPU-s/GiB, "
              f"{ds / gib / 1000:.1f}k ctx switches/GiB, RSS base {base >> 20} MiB peak {srv.peak >> 20} MiB, ok {ok}/{a.count}")
        srv.stop()

async def slow(a):
    """256 uploads into a 50 MB/s pipeline: RSS under back pressure."""
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        srv = Server(work, stages="{type: rate_limit, rate: 50MB, scope: pipeline}",
                     tcp_extra=f"    max_concurrent_uploads: {a.count}\n")
        base = rss(srv.pid)
        sampler = asyncio.ensure_future(srv.sample())
        chunk = os.urandom(1 << 20)
        sent = [0]
        async def client():
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            try:
                while True:
                    w.write(chunk); sent[0] += len(chunk)
                    await w.drain()
            except (asyncio.CancelledError, ConnectionError):
                pass
            finally:
                w.transport.abort()
        c0 = cpu(srv.pid)
        tasks = [asyncio.ensure_future(client()) for _ in range(a.count)]
        await asyncio.sleep(a.seconds)
        now = rss(srv.pid)
        for t in tasks: t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        srv.sampling = False; await sampler
        print(f"slow sink {a.count} uploads, {a.seconds}s: RSS base {base >> 20} MiB, at end {now >> 20} MiB, peak {srv.peak >> 20} MiB; "
              f"clients pushed {sent[0] >> 20} MiB; server {cpu(srv.pid) - c0:.1f} CPU-s")
        srv.stop()

async def trickle(a):
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        srv = Server(work, tcp_extra=f"    max_concurrent_uploads: {a.uploads}\n    max_queued_uploads: 30000\n    queue_timeout: 600s\n")
        base = rss(srv.pid)
        sampler = asyncio.ensure_future(srv.sample())
        dropped = [0]; opened = [0]
        stop = asyncio.Event()
        async def client(i):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            except OSError:
                dropped[0] += 1; return
            opened[0] += 1
            await asyncio.sleep((i % 100) / 100)
            try:
                while not stop.is_set():
                    w.write(b"x" * a.bytes)
                    await w.drain()
                    try:
                        await asyncio.wait_for(r.read(1), timeout=1.0)
                        dropped[0] += 1; return  # the server answered or closed: dropped
                    except asyncio.TimeoutError:
                        pass
            except (ConnectionError, OSError):
                dropped[0] += 1; return
            finally:
                w.transport.abort()
        tasks = []
        for i in range(a.count):
            tasks.append(asyncio.ensure_future(client(i)))
            if i % 500 == 499: await asyncio.sleep(0.05)
        await asyncio.sleep(a.seconds)
        now = rss(srv.pid)
        stop.set()
        alive = opened[0] - dropped[0]
        await asyncio.gather(*tasks, return_exceptions=True)
        srv.sampling = False; await sampler
        print(f"trickle {a.count} conns x {a.bytes} B/s ({a.uploads} upload slots), {a.seconds}s: RSS base {base >> 20} MiB, "
              f"with connections {now >> 20} MiB = {(now - base) / a.count / 1024:.1f} KiB/conn (peak {srv.peak >> 20} MiB); "
              f"alive {alive}, dropped {dropped[0]}")
        srv.stop()

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["throughput", "slow", "trickle"])
p.add_argument("--count", type=int)
p.add_argument("--size", default="16MiB")
p.add_argument("--seconds", type=float, default=30)
p.add_argument("--bytes", type=int, default=1, help="trickle: bytes per second per connection")
p.add_argument("--uploads", type=int, default=10000, help="trickle: max_concurrent_uploads")
a = p.parse_args()
a.count = a.count or {"throughput": 16, "slow": 256, "trickle": 10000}[a.mode]
asyncio.run({"throughput": throughput, "slow": slow, "trickle": trickle}[a.mode](a))
