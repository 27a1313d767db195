#!/usr/bin/env python3
"""Sluice benchmark: one command, one table.

Builds the release binary, starts each server in turn (Sluice with bench/configs/*.yaml, the
original asyncio design and its variants, nginx WebDAV, rsyslog, a discard server), runs the
same `sluice load` scenarios against each, and measures the *server's* CPU seconds (utime +
stime from /proc/PID/stat, summed over the server's process tree, before/after) and peak RSS
(VmRSS sampled every 50 ms). Prints markdown and writes it to bench/results/latest.md.

    bench/run.py                    # everything (under ~15 minutes)
    bench/run.py --only tcp         # one section: tcp, http, lines, memory, hold, ceiling
    bench/run.py --only tcp,hold --quick
    bench/run.py --no-build         # reuse the last release build

Data lands in a temporary directory on the same disk as the repository (not /tmp, which may be
tmpfs), emptied between runs and removed at the end.
"""
import argparse
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
MIB = 1 << 20
SECTIONS = ["ceiling", "tcp", "http", "tls", "lines", "stages", "memory", "hold"]


# MARK: /proc measurements

def children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_pids(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


class RSSSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree until stopped; keeps the peak."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.samples = []  # (monotonic time, KiB)
        self.stop_event = threading.Event()

    def run(self):
        pids, refreshed = tree_pids(self.pid), time.monotonic()
        while not self.stop_event.is_set():
            if time.monotonic() - refreshed > 1:
                pids, refreshed = tree_pids(self.pid), time.monotonic()
            rss = rss_kib(pids)
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic(), rss))
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join()
        return self.peak


# MARK: servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Server:
    """A server process started in its own session, so it and its children stop together."""

    def __init__(self, name, cmd, data, port, env=None, landed=None):
        self.name, self.cmd, self.data, self.port = name, cmd, Path(data), port
        self.env = dict(os.environ, **(env or {}))
        self.landed = landed or (lambda: dir_bytes(self.data))
        self.proc = None
        self.log = None
        # A slow peer runs a fraction of each scenario's uploads (rates are per second, so comparable).
        self.scale = 1.0

    def start(self, logdir):
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = open(Path(logdir) / f"{self.name}.log", "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=ROOT, start_new_session=True)
        if not wait_for_port(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"{self.name} did not start listening on {self.port}; see {self.log.name}")
        time.sleep(0.3)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()

    def cpu(self):
        return cpu_seconds(tree_pids(self.proc.pid))

    def rss(self):
        return rss_kib(tree_pids(self.proc.pid))


def dir_bytes(path):
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                try:
                    total += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    pass
    return total


# Where empty_dir moves small files instead of deleting them (set by Bench; same filesystem).
TRASH = None


def empty_dir(path):
    """Clears the uploads in `path`, keeping hidden entries (a sink's .sluice-tmp/, nginx's body temp).

    Nothing is deleted until the run ends: files are moved aside into TRASH, large ones
    truncated first (so their pages and blocks are freed and no writeback of one server's
    data runs during another's measurement). On ext4, every file created soon after
    deletions pays for a scan past the recently freed inodes (`recently_deleted`,
    `find_inode_bit` in `perf`): measured at 40-60% of a server's CPU on the 4 KiB keep-alive
    run that followed another run's deletions, ~40% on 256 x 1 MiB after 1,024 deletions.
    Deleting between runs would charge whichever server runs next for the previous one's files.
    """
    path = Path(path)
    if path.exists():
        for child in path.iterdir():
            if child.name.startswith("."):
                continue
            if TRASH is None:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
                continue
            try:
                if child.is_file() and not child.is_symlink() and child.stat().st_size >= MIB:
                    os.truncate(child, 0)
            except OSError:
                pass
            TRASH.mkdir(parents=True, exist_ok=True)
            child.rename(TRASH / f"{next(_trash_ids)}-{child.name}")
    path.mkdir(parents=True, exist_ok=True)


_trash_ids = itertools.count()


def drop_page_cache():
    """Drops the clean page cache (root only; otherwise nothing), after the sync above.

    Every measurement then starts from the same cache state, whichever server ran before.
    Measured: HTTP 2 x 1 GiB into a freshly truncated directory ran at 750-1,150 MB/s and
    1.0-1.45 CPU-s per GiB for Sluice (1,570-2,540 MB/s for nginx, in alternation) with the
    previous runs' pages cached; with the cache dropped before each run, 2,010-2,050 MB/s at
    0.53 for Sluice and 2,290-2,560 MB/s at 0.42-0.45 for nginx.
    """
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        pass


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")


class HotMemory:
    """Keeps freed memory in the guest for the run (virtual machines with free page reporting).

    A guest whose balloon driver reports free pages hands them back to the host, which
    takes them away; the next first touch of such a page faults in the host, and the copy
    into the page cache that does the touching runs several times slower. Measured here:
    writing 1 GiB into the page cache with `dd` took 1.31 s (820 MB/s) with reported pages,
    0.19 s (5.7 GB/s) with warm ones; an HTTP 1 GiB upload swung between 500 and 4,000 MB/s
    by which of the two it met, for Sluice and nginx alike. So, as root, the run raises the
    reporting order past the largest block (nothing is reported), touches `warm` bytes so
    the first server does not pay for first touches either, and restores the order at the end.
    Without root, or without free page reporting, it does nothing (and says so).
    """

    def __init__(self, warm=None):
        # Touch most of what is free: the page allocator does not hand back the pages
        # freed last first, and a run writes a few GiB between drops of the page cache.
        # (4 GiB warmed left the HTTP 1 GiB uploads at 2.2-2.4 GB/s for both servers,
        # against ~4 GB/s for Sluice by hand after more memory had been touched.)
        if warm is None:
            available = 0
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
            warm = max(1 << 30, available - (3 << 30))
        self.warm = warm
        self.saved = None
        self.note = "free page reporting left as it is"

    def __enter__(self):
        try:
            self.saved = PAGE_REPORTING.read_text().strip()
            PAGE_REPORTING.write_text("11\n")
        except OSError:
            self.saved = None
            return self
        # In 1 GiB pieces, all held until the end: each page is touched once, and then all
        # are freed together.
        pieces = []
        for _ in range(self.warm >> 30):
            piece = bytearray(1 << 30)
            piece[::4096] = b"\1" * ((1 << 30) // 4096)
            pieces.append(piece)
        del pieces
        self.note = f"free page reporting off for the run (order {self.saved} → 11), {self.warm >> 30} GiB of free memory touched first"
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            try:
                PAGE_REPORTING.write_text(self.saved + "\n")
            except OSError:
                pass
        return False


# MARK: the runner

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick or args.smoke
        # --smoke: every scenario with sizes ÷ 64 and short holds, to check the harness itself.
        self.div = 64 if args.smoke else 1
        self.work = Path(tempfile.mkdtemp(prefix=".bench-", dir=ROOT))
        global TRASH
        TRASH = self.work / "trash"
        self.logdir = self.work / "logs"
        self.logdir.mkdir()
        self.sluice = None
        self.sections = []  # (title, markdown)

    def log(self, msg):
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def size(self, nominal):
        """A size for `sluice load --size`: the nominal one, or ÷ 64 under --smoke."""
        units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
        for unit, factor in units.items():
            if nominal.endswith(unit):
                return str(max(1, int(nominal[:-len(unit)]) * factor // self.div))
        return nominal

    def build(self):
        if self.args.sluice:
            self.sluice = str(Path(self.args.sluice).resolve())
            return
        if not self.args.no_build:
            self.log("swift build -c release --product sluice")
            subprocess.run(["swift", "build", "-c", "release", "--product", "sluice"], cwd=ROOT, check=True)
        bin_path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.sluice = str(Path(bin_path) / "sluice")

    def load(self, *args, timeout=600):
        cmd = [self.sluice, "load", "--json", *map(str, args)]
        self.log(" ".join(cmd[1:]))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError(f"sluice load failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        report = json.loads(lines[-1])
        # Only waited-for children count in RUSAGE_CHILDREN: this is the generator's own CPU.
        report["generator_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return report

    def measure(self, server, *load_args, timeout=600):
        """Runs one load against a running server; returns the load report plus server figures."""
        empty_dir(server.data)
        os.sync()
        drop_page_cache()
        time.sleep(0.2)
        base_rss = server.rss()
        cpu0 = server.cpu()
        sampler = RSSSampler(server.proc.pid)
        sampler.start()
        started = time.monotonic()
        try:
            report = self.load(*load_args, timeout=timeout)
        finally:
            peak = sampler.stop()
        hold = report.get("hold")
        if hold:
            # While everything is held: after the connect phase, before the generator resets them all.
            lo, hi = started + hold["connect_s"] + 1, started + report["wall_s"] - 1
            held = [kib for t, kib in sampler.samples if lo <= t <= hi]
            report["server_rss_held_kib"] = max(held) if held else peak
        report["server_cpu_s"] = server.cpu() - cpu0
        report["server_rss_base_kib"] = base_rss
        report["server_rss_peak_kib"] = peak
        report["landed_bytes"] = server.landed()
        return report

    def sluice_server(self, name, config, port, data, extra_env=None):
        env = {"SLUICE_BENCH_PORT": str(port), "SLUICE_BENCH_DATA": str(data), **(extra_env or {})}
        check = subprocess.run([self.sluice, "validate", str(BENCH / "configs" / config)], capture_output=True,
                               text=True, env=dict(os.environ, **env))
        if check.returncode != 0:
            reason = (check.stderr or check.stdout).strip().splitlines()
            return None, (reason[0] if reason else f"exit {check.returncode}")
        return Server(name, [self.sluice, "serve", "--config", str(BENCH / "configs" / config)], data, port,
                      env=env), None

    def asyncio_server(self, name, port, data, read_size, writer, uvloop=False):
        cmd = [sys.executable, str(BENCH / "peers" / "asyncio_server.py"), "--port", str(port), "--dir", str(data),
               "--read-size", str(read_size), "--writer", writer]
        if uvloop:
            cmd.append("--uvloop")
        return Server(name, cmd, data, port)

    def floor_server(self, name, mode, port, data):
        """bench/peers/floor_server.c, compiled here: the kernel's share of the TCP rows."""
        binary = self.work / "floor_server"
        if not binary.exists():
            cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            if cc is None:
                return (name, "no C compiler")
            built = subprocess.run([cc, "-O2", "-o", str(binary), str(BENCH / "peers" / "floor_server.c")],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                return (name, f"did not compile: {(built.stderr.strip().splitlines() or ['?'])[0]}")
        return Server(name, [str(binary), str(port), str(data), mode], data, port)

    def nginx_server(self, port, root, tls=None):
        cmd = [str(BENCH / "peers" / "run-nginx.sh"), "--port", str(port), "--root", str(root)]
        if tls:
            cmd += ["--tls", *tls]
        return Server("nginx", cmd, Path(root) / "upload", port)

    def discard_server(self, proto, port):
        return Server(f"discard-{proto}", [self.sluice, "load", "--serve-discard", proto, "--target",
                                          f"127.0.0.1:{port}"], self.work / "discard", port, landed=lambda: 0)

    def wanted(self, name):
        return not self.args.servers or any(w in name for w in self.args.servers.split(","))

    def with_server(self, server, body):
        """Starts `server`, runs body(server), stops it; a server that fails to start gives None."""
        try:
            server.start(self.logdir)
        except RuntimeError as error:
            self.log(str(error))
            return None
        try:
            return body(server)
        finally:
            server.stop()
            empty_dir(server.data)

    # MARK: sections

    def throughput_table(self, rows, show_landed=True):
        head = "| scenario | server | ok / failed | MB/s | MiB/s | uploads/s | p50 ms | p99 ms | server CPU-s | CPU-s per GiB | peak RSS MiB | generator CPU-s |"
        sep = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        out = [head, sep]
        for scenario, server, r in rows:
            if r is None or isinstance(r, str):
                out.append(f"| {scenario} | {server} | {r or 'did not run'} | | | | | | | | | |")
                continue
            gib = r["bytes"] / GIB
            cpu_per_gib = r["server_cpu_s"] / gib if gib > 0 else float("nan")
            flag = ""
            if r["uploads_failed"] and r.get("errors"):
                reason = max(r["errors"].items(), key=lambda kv: kv[1])[0].replace("|", "/")
                flag += f" ({reason[:80]})"
            if show_landed and r.get("landed_bytes") is not None and r["landed_bytes"] != r["bytes"] and not server.startswith("discard"):
                flag = f" (landed {r['landed_bytes']} ≠ {r['bytes']})"
            out.append(
                f"| {scenario} | {server} | {r['uploads_ok']} / {r['uploads_failed']}{flag} | {r['mb_per_s']:.0f} | "
                f"{r['mib_per_s']:.0f} | {r['uploads_per_s']:.1f} | {r['latency']['p50_ms']:.1f} | "
                f"{r['latency']['p99_ms']:.1f} | {r['server_cpu_s']:.2f} | {cpu_per_gib:.2f} | "
                f"{r['server_rss_peak_kib'] / 1024:.0f} | {r.get('generator_cpu_s', 0):.2f} |")
        return "\n".join(out)

    @staticmethod
    def ratio(a, b, key):
        try:
            return a[key] / b[key]
        except (TypeError, KeyError, ZeroDivisionError):
            return None

    @staticmethod
    def cpu_per_gib(r):
        if not isinstance(r, dict) or r["bytes"] == 0:
            return None
        return r["server_cpu_s"] / (r["bytes"] / GIB)

    def compare(self, rows, subject, peers, goals, scenario_goals=None):
        """Lines like: 16 × 16 MiB: Sluice 1.9× asyncio-64k (goal ≥ 1.5×) ✓ ...

        `goals` maps a peer to its goals (`throughput` ≥, `cpu` ≤, `p99` ≤, as ratios);
        `scenario_goals` maps a scenario to goals that replace them for it. A scenario a
        server ran several times (rounds) compares the medians of its runs, metric by metric.
        """
        by = {}
        for scenario, server, r in rows:
            if isinstance(r, dict):
                by.setdefault(scenario, {}).setdefault(server, []).append(r)

        def median(values):
            values = sorted(v for v in values if v is not None)
            if not values:
                return None
            mid = len(values) // 2
            return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

        out = []
        for scenario, servers in by.items():
            s = servers.get(subject)
            if not s:
                continue
            parts = []
            for peer in peers:
                p = servers.get(peer)
                if not p:
                    continue
                ts, tp = median(r["mb_per_s"] for r in s), median(r["mb_per_s"] for r in p)
                t = ts / tp if ts is not None and tp else None
                cs, cp = median(self.cpu_per_gib(r) for r in s), median(self.cpu_per_gib(r) for r in p)
                c = cs / cp if cs is not None and cp else None
                goal = (scenario_goals or {}).get(scenario, goals).get(peer, {})
                text = f"{t:.2f}× the throughput of {peer}" if t is not None else f"? vs {peer}"
                if "throughput" in goal and t is not None:
                    text += f" (goal ≥ {goal['throughput']}× {'✓' if t >= goal['throughput'] else '✗'})"
                if c is not None:
                    text += f", {c:.2f}× its CPU per GiB"
                    if "cpu" in goal:
                        text += f" (goal ≤ {goal['cpu']}× {'✓' if c <= goal['cpu'] else '✗'})"
                qs, qp = median(r["latency"]["p99_ms"] or None for r in s), median(r["latency"]["p99_ms"] or None for r in p)
                if "p99" in goal and qs and qp:
                    q = qs / qp
                    text += f", {q:.2f}× its p99 latency (goal ≤ {goal['p99']}× {'✓' if q <= goal['p99'] else '✗'})"
                if len(s) > 1 or len(p) > 1:
                    text += f" [medians of {len(s)} and {len(p)} runs]"
                parts.append(text)
            if parts:
                out.append(f"- {scenario}: {subject} " + "; ".join(parts))
        return "\n".join(out)

    def section_ceiling(self):
        rows = []
        port = free_port()
        iperf = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)
        try:
            out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3" if self.quick else "5", "-J"],
                                 capture_output=True, text=True, timeout=60)
            bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
            iperf_line = f"- iperf3 loopback, 1 stream: **{bps / 8e6:.0f} MB/s**"
        except Exception as error:  # noqa: BLE001 — report, go on
            iperf_line = f"- iperf3: failed ({error})"
        finally:
            if iperf.poll() is None:
                os.killpg(iperf.pid, signal.SIGTERM)
            iperf.wait()
        count = 2 if self.quick else 4

        def tcp_runs(server):
            return [
                ("tcp 1 × 256 MiB", server.name, self.measure(server, "--target", f"127.0.0.1:{server.port}", "--concurrency", 1, "--size", self.size("256MiB"), "--count", count)),
                ("tcp 16 × 16 MiB", server.name, self.measure(server, "--target", f"127.0.0.1:{server.port}", "--concurrency", 16, "--size", self.size("16MiB"), "--count", 16 * count)),
                ("tcp 256 × 1 MiB", server.name, self.measure(server, "--target", f"127.0.0.1:{server.port}", "--concurrency", 256, "--size", self.size("1MiB"), "--count", 256 * count)),
            ]

        def http_runs(server):
            url = f"http://127.0.0.1:{server.port}/upload/"
            return [
                ("http 16 × 16 MiB", server.name, self.measure(server, "--mode", "http", "--target", url, "--concurrency", 16, "--size", self.size("16MiB"), "--count", 16 * count)),
                ("http keep-alive 64 × 4 KiB", server.name, self.measure(server, "--mode", "http", "--target", url, "--keepalive", "--concurrency", 64, "--size", "4KiB", "--duration", "3s")),
            ]

        rows += self.with_server(self.discard_server("tcp", free_port()), tcp_runs) or []
        rows += self.with_server(self.discard_server("http", free_port()), http_runs) or []
        md = ("The generator against `sluice load --serve-discard` (a NIO server that reads and drops): the most "
              "`sluice load` can push on this machine, generator and server sharing the cores.\n\n"
              + iperf_line + "\n\n" + self.throughput_table(rows, show_landed=False))
        self.sections.append(("Generator ceiling", md))

    def in_rounds(self, servers, scenario_names, run, once=()):
        """Rows of `run(server)` for every server, `rounds` times in alternation (the
        comparisons take medians: one run each let a noisy minute decide a ratio near its
        goal), sorted by scenario. Servers named in `once` run in the first round only; a
        server given as (name, why) gets an "n/a" row per scenario."""
        rounds = 1 if self.quick else 3
        rows = []
        for round_number in range(rounds):
            for server in servers:
                if isinstance(server, tuple):
                    if round_number == 0:
                        rows += [(name, server[0], f"n/a: {server[1]}") for name in scenario_names]
                    continue
                if round_number > 0 and server.name in once:
                    continue
                rows += self.with_server(server, run) or [(name, server.name, "failed to start") for name in scenario_names]
        rows.sort(key=lambda row: scenario_names.index(row[0]))
        return rows, rounds

    def tcp_scenarios(self):
        k = 1 if self.quick else 4
        return [
            ("1 × 256 MiB", 1, "256MiB", k),
            ("16 × 16 MiB", 16, "16MiB", 16 * k),
            ("256 × 1 MiB", 256, "1MiB", 256 * k),
        ]

    def section_tcp(self):
        data = self.work / "data"
        servers = []
        sl, why = self.sluice_server("sluice", "tcp-disk.yaml", free_port(), data)
        servers.append(sl or ("sluice", why))
        as_written = self.asyncio_server("asyncio-1k-aiofile (as written)", free_port(), data, 1024, "aiofile")
        # At 5–100 MB/s a full GiB per scenario would take most of the time budget: a quarter of the uploads.
        as_written.scale = 0.25
        servers.append(as_written)
        servers.append(self.asyncio_server("asyncio-64k-plain", free_port(), data, 65536, "plain"))
        servers.append(self.asyncio_server("asyncio-64k-plain-uvloop", free_port(), data, 65536, "plain", uvloop=True))
        servers += [self.floor_server(f"c-floor-{mode} (reference)", mode, free_port(), data) for mode in ("splice", "copy")]
        servers = [x for x in servers if self.wanted(x[0] if isinstance(x, tuple) else x.name)]

        def run(server):
            out = []
            for name, conc, size, count in self.tcp_scenarios():
                n = max(1, int(count * server.scale))
                out.append((name, server.name, self.measure(server, "--target", f"127.0.0.1:{server.port}",
                                                            "--concurrency", conc, "--size", self.size(size), "--count", n)))
            return out
        # The design as written runs once: 20× and more away from its goal, and the slowest to run.
        rows, rounds = self.in_rounds(servers, [s[0] for s in self.tcp_scenarios()], run, once={as_written.name})
        goals = {"asyncio-64k-plain": {"throughput": 1.5, "cpu": 0.5}, "asyncio-1k-aiofile (as written)": {"throughput": 5}}
        md = ("Each scenario sends 1 GiB (`--quick`: 256 MiB); the design as written gets a quarter of that, "
              "to keep the run bounded (throughput and CPU per GiB are rates, so they compare). "
              f"The servers run {rounds} round{'s' if rounds != 1 else ''} in alternation (the design as written once); the comparisons "
              "use each server's median per metric. The `c-floor` rows are a reference, not a peer: "
              "bench/peers/floor_server.c, one C thread doing this job and nothing else (epoll, a file per "
              "connection, a receipt line; no limits, timeouts, names or metrics), splicing as Sluice does "
              "or reading 64 KiB and writing as the asyncio variant does: nearly all of their CPU is the "
              "kernel's, a measure of the kernel's share of the row (a server that splices with more threads, as Sluice does with large uploads, can spend a little less).\n\n" +
              self.throughput_table(rows) + "\n\n" +
              self.compare(rows, "sluice", ["asyncio-64k-plain", "asyncio-1k-aiofile (as written)", "asyncio-64k-plain-uvloop"], goals) +
              "\n" + self.compare(rows, "c-floor-splice (reference)", ["asyncio-64k-plain"], {}) +
              "\n" + self.compare(rows, "c-floor-copy (reference)", ["asyncio-64k-plain"], {}) +
              "\n" + self.compare(rows, "sluice", ["c-floor-splice (reference)"], {}))
        self.sections.append(("TCP uploads into disk", md))

    def http_scenarios(self):
        k = 1 if self.quick else 2
        return [
            ("1 × 1 GiB", ["--concurrency", 1, "--size", self.size("1GiB"), "--count", k]),
            ("16 × 16 MiB", ["--concurrency", 16, "--size", self.size("16MiB"), "--count", 32 * k]),
            ("256 × 1 MiB", ["--concurrency", 256, "--size", self.size("1MiB"), "--count", 512 * k]),
            ("keep-alive 64 × 4 KiB", ["--concurrency", 64, "--size", "4KiB", "--keepalive", "--duration", "1s" if self.args.smoke else "4s" if self.quick else "10s"]),
        ]

    def section_http(self):
        data = self.work / "data"
        servers = []
        sl, why = self.sluice_server("sluice", "http-disk.yaml", free_port(), data)
        servers.append(sl or ("sluice", why))
        servers.append(self.nginx_server(free_port(), data))
        servers = [x for x in servers if self.wanted(x[0] if isinstance(x, tuple) else x.name)]

        def run(server):
            url = f"http://127.0.0.1:{server.port}/upload/"
            return [(name, server.name, self.measure(server, "--mode", "http", "--target", url, *args))
                    for name, args in self.http_scenarios()]
        rows, rounds = self.in_rounds(servers, [s[0] for s in self.http_scenarios()], run)
        # Issue #3: large PUTs ≥ 1.1× nginx's throughput at ≤ 0.7× its CPU per GiB; 4 KiB
        # keep-alive PUTs at least nginx's uploads/s with at most its p99 latency.
        keep_alive = {name: {"nginx": {"throughput": 1.0, "p99": 1.0}} for name, _ in self.http_scenarios() if "keep-alive" in name}
        md = (f"Sluice and nginx run {rounds} round{'s' if rounds != 1 else ''} in alternation; the comparisons use each server's median per metric.\n\n"
              + self.throughput_table(rows) + "\n\n" + self.compare(rows, "sluice", ["nginx"], {"nginx": {"throughput": 1.1, "cpu": 0.7}}, keep_alive))
        self.sections.append(("HTTP PUT into disk (vs nginx WebDAV)", md))

    def section_tls(self):
        """HTTPS PUTs, Sluice's `tls:` against nginx's `ssl` with one certificate (no issue sets goals)."""
        if shutil.which("openssl") is None:
            self.sections.append(("HTTPS PUT into disk (vs nginx WebDAV over TLS)", "n/a: no openssl to make a certificate"))
            return
        certs = self.work / "certs"
        certs.mkdir(exist_ok=True)
        cert, key = certs / "server.pem", certs / "server.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        data = self.work / "data"
        servers = []
        sl, why = self.sluice_server("sluice", "https-disk.yaml", free_port(), data,
                                     {"SLUICE_BENCH_CERT": str(cert), "SLUICE_BENCH_KEY": str(key)})
        servers.append(sl or ("sluice", why))
        servers.append(self.nginx_server(free_port(), data, tls=(str(cert), str(key))))
        servers = [x for x in servers if self.wanted(x[0] if isinstance(x, tuple) else x.name)]

        def run(server):
            url = f"https://127.0.0.1:{server.port}/upload/"
            return [(name, server.name, self.measure(server, "--mode", "http", "--target", url, "--cacert", cert, *args))
                    for name, args in self.http_scenarios()]
        # The plain-HTTP section's scenarios, so the two tables read side by side.
        rows, rounds = self.in_rounds(servers, [s[0] for s in self.http_scenarios()], run)
        md = ("TLS 1.3 (both servers' default with this client), ECDHE on P-256, AES-GCM; the generator encrypts on the same "
              "two cores, so it takes a larger share of them than in the plain-HTTP section. No issue sets goals here: the rows "
              "compare Sluice's `tls:` with nginx's `ssl`, same certificate. Bodies are never spliced over TLS. "
              f"Sluice and nginx run {rounds} round{'s' if rounds != 1 else ''} in alternation; the comparisons use each "
              "server's median per metric.\n\n"
              + self.throughput_table(rows) + "\n\n" + self.compare(rows, "sluice", ["nginx"], {}))
        self.sections.append(("HTTPS PUT into disk (vs nginx WebDAV over TLS)", md))

    def section_lines(self):
        data = self.work / "data"
        conns = 64 if self.quick else 256
        per_conn = self.size("1MiB" if self.quick else "2MiB")
        rows = []

        def rsyslog(zip_level):
            port = free_port()
            workdir = self.work / f"rsyslog-{zip_level}"
            workdir.mkdir(exist_ok=True)
            out = data / ("lines.log.gz" if zip_level else "lines.log")
            conf = (BENCH / "peers" / "rsyslog.conf").read_text()
            conf = (conf.replace("@WORKDIR@", str(workdir)).replace("@PORT@", str(port))
                    .replace("@OUT@", str(out)).replace("@ZIP@", str(zip_level)))
            (workdir / "rsyslog.conf").write_text(conf)
            return Server(f"rsyslog{' zipLevel 1' if zip_level else ''}",
                          ["rsyslogd", "-n", "-f", str(workdir / "rsyslog.conf"), "-i", str(workdir / "rsyslog.pid")],
                          data, port)

        def count_lines(path):
            path = Path(path)
            if not path.exists():
                return 0
            if path.suffix == ".gz":
                p = subprocess.run(f"zcat -q '{path}' 2>/dev/null | wc -l", shell=True, capture_output=True, text=True)
            else:
                p = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True)
            return int((p.stdout.split() or ["0"])[0])

        def run(server):
            # The data directory is emptied after each server stopped (below), never while one
            # runs: removing a running sink's active file would lose what it writes next.
            cpu0 = server.cpu()
            sampler = RSSSampler(server.proc.pid)
            sampler.start()
            report = self.load("--mode", "lines", "--target", f"127.0.0.1:{server.port}", "--concurrency", 64,
                               "--line-size", 200, "--size", per_conn, "--count", conns)
            # The server may still be writing what it buffered: wait until the output stops growing.
            # Time to disk = the generator's wall time + how long the output kept growing after it.
            load_end = time.monotonic()
            last, last_change = dir_bytes(server.data), load_end
            while time.monotonic() - last_change < 1.5 and time.monotonic() - load_end < 300:
                time.sleep(0.1)
                size = dir_bytes(server.data)
                if size != last:
                    last, last_change = size, time.monotonic()
            elapsed = report["wall_s"] + (last_change - load_end)
            report["server_cpu_s"] = server.cpu() - cpu0
            report["server_rss_peak_kib"] = sampler.stop()
            server.stop()  # flush (gzip trailers) before counting
            files = [p for p in server.data.rglob("*") if p.is_file() and not p.name.startswith(".")]
            report["lines_landed"] = sum(count_lines(p) for p in files)
            report["landed_wall_s"] = elapsed
            empty_dir(server.data)
            return [("lines", server.name, report)]

        empty_dir(data)
        candidates = []
        for config, label in (("lines-rotate.yaml", "sluice rotate"), ("lines-rotate-gzip.yaml", "sluice rotate gzip 1")):
            sl, why = self.sluice_server(label, config, free_port(), data)
            candidates.append(sl or (label, why))
        candidates.insert(1, rsyslog(0))
        candidates.append(rsyslog(1))
        for server in candidates:
            if isinstance(server, tuple):
                rows.append(("lines", server[0], f"n/a: {server[1]}"))
                continue
            rows += self.with_server(server, run) or [("lines", server.name, "failed to start")]
        out = ["| server | connections | lines sent | lines landed | records/s (to disk) | server CPU-s | peak RSS MiB |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        for _, name, r in rows:
            if not isinstance(r, dict):
                out.append(f"| {name} | {r} | | | | | |")
                continue
            out.append(f"| {name} | {r['uploads_ok']} | {r['records']} | {r['lines_landed']} | "
                       f"{r['lines_landed'] / r['landed_wall_s']:.0f} | {r['server_cpu_s']:.2f} | {r['server_rss_peak_kib'] / 1024:.0f} |")
        md = (f"64 concurrent senders, 200-byte lines, {int(per_conn) // 200 if per_conn.isdigit() else per_conn} lines per connection, {conns} connections. Records/s = lines found "
              "in the output ÷ time until the output stopped growing.\n\n" + "\n".join(out))
        self.sections.append(("Line ingest (vs rsyslog imtcp → omfile)", md))

    @staticmethod
    def raw_stage_rates(sample_path):
        """MB per CPU-second of zlib (levels 1 and 6), OpenSSL SHA-256 and zlib crc32 on one sample, in
        this process: the same libz and libcrypto Sluice links."""
        import hashlib
        import zlib
        data = Path(sample_path).read_bytes()
        chunks = [data[i:i + (256 << 10)] for i in range(0, len(data), 256 << 10)]

        def rate(fn, repeat):
            t0 = time.process_time()
            for _ in range(repeat):
                fn()
            return len(data) * repeat / 1e6 / max(1e-9, time.process_time() - t0)

        def deflate(level):
            def run():
                c = zlib.compressobj(level, zlib.DEFLATED, 31)
                for chunk in chunks:
                    c.compress(chunk)
                c.flush()
            return run

        def sha():
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)

        def crc():
            v = 0
            for chunk in chunks:
                v = zlib.crc32(chunk, v)
        out = {"gzip1": rate(deflate(1), 1), "gzip6": rate(deflate(6), 1), "sha256": rate(sha, 4), "crc32": rate(crc, 8)}
        # compress then hash: the hash sees the compressed bytes; as an upper bound, costs add up.
        out["both"] = 1 / (1 / out["gzip1"] + 1 / out["sha256"])
        return out

    def section_stages(self):
        data = self.work / "data"
        names = ["pass", "gzip1", "gzip6", "sha256", "crc32", "both"]
        ports = {n: free_port() for n in names}
        env = {f"SLUICE_BENCH_PORT_{n.upper()}": str(p) for n, p in ports.items()}
        server, why = self.sluice_server("sluice", "stages.yaml", ports["pass"], data, extra_env=env)
        if server is None:
            self.sections.append(("Stage costs", f"n/a: {why}"))
            return
        count = 8 if self.quick else 32
        size = self.size("16MiB")

        # A stage's cost is a difference of two runs, compared with a raw rate, and this
        # machine's CPU speed drifts from minute to minute (measured: the same Python crc32
        # loop at 4,155 and 3,280 MB per CPU-second minutes apart; crc32's ratio came out
        # 0.91x and 1.48x in two runs that measured the raw rate once). So every stage run is
        # flanked by pass-through runs of the same size (its baseline is their mean) and
        # followed at once by the raw measurement; this repeats `rounds` times and the
        # medians count.
        rounds = 1 if self.quick else 3
        # The cheap stages cost 0.2–0.7 CPU-s per GiB: with 512 MiB a run, ±30 ms of noise on
        # either run is ±20% of their cost. They (and their baselines) send four times as much.
        cheap = {"sha256", "crc32"}

        def median(values):
            values = sorted(v for v in values if v is not None)
            return values[len(values) // 2] if values else None

        def run(server):
            measured = {}
            passes = {}
            for payload in ("text", "random"):
                stages_here = [n for n in names if n != "pass" and not (n == "crc32" and payload == "text")]
                sample = self.work / f"stage-sample-{payload}"
                for _ in range(rounds):
                    for n in stages_here:
                        n_count = count * 4 if n in cheap else count

                        def go(name):
                            return self.measure(server, "--target", f"127.0.0.1:{ports[name]}", "--concurrency", 2, "--size", size,
                                                "--count", n_count, "--payload", payload)
                        before = go("pass")
                        if not sample.exists():
                            # A landed pass-through file is the payload itself: the sample for the raw figures.
                            files = sorted(p for p in server.data.rglob("*") if p.is_file() and not p.name.startswith("."))
                            if files:
                                shutil.copyfile(files[0], sample)
                        stage = go(n)
                        raw_now = self.raw_stage_rates(sample)[n] if sample.exists() else None
                        after = go("pass")
                        passes.setdefault(payload, []).extend([before, after])
                        cpg, b0, b1 = self.cpu_per_gib(stage), self.cpu_per_gib(before), self.cpu_per_gib(after)
                        cost = cpg - (b0 + b1) / 2 if None not in (cpg, b0, b1) else None
                        in_sluice = GIB / 1e6 / cost if cost and cost > 0 else None
                        measured.setdefault((payload, n), []).append({
                            "cpg": cpg, "cost": cost, "raw": raw_now, "mb_per_s": stage["mb_per_s"],
                            "ratio": in_sluice / raw_now if in_sluice and raw_now else None,
                        })
            one = self.measure(server, "--target", f"127.0.0.1:{ports['both']}", "--concurrency", 1, "--size", self.size("64MiB"),
                               "--count", 4 if not self.quick else 2, "--payload", "text")
            many = self.measure(server, "--target", f"127.0.0.1:{ports['both']}", "--concurrency", 4, "--size", self.size("64MiB"),
                                "--count", 16 if not self.quick else 8, "--payload", "text")
            # Memory per active upload: 64 uploads held at 1 MiB/s each, pass-through vs compress+hash.
            mem = {}
            for n in ("pass", "both"):
                mem[n] = self.measure(server, "--target", f"127.0.0.1:{ports[n]}", "--concurrency", 64, "--size", self.size("6MiB"),
                                      "--count", 64, "--rate", "1MiB", "--payload", "text")
            return measured, passes, one, many, mem

        out = self.with_server(server, run)
        if out is None:
            self.sections.append(("Stage costs", "sluice failed to start"))
            return
        measured, passes, one, many, mem = out
        labels = {"gzip1": "compress gzip level 1", "gzip6": "compress gzip level 6", "sha256": "hash sha256",
                  "crc32": "hash crc32", "both": "compress 1 + hash sha256"}
        rows = ["| stage | payload | pipeline CPU-s per GiB | minus pass-through | MB per CPU-s in Sluice | raw MB per CPU-s (same libs) | Sluice ÷ raw | MB/s |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for payload in ("text", "random"):
            runs = passes.get(payload, [])
            if runs:
                rows.append(f"| pass-through | {payload} | {median(self.cpu_per_gib(r) for r in runs):.2f} | | | | | "
                            f"{median(r['mb_per_s'] for r in runs):.0f} |")
            for (p_, n), ms in measured.items():
                if p_ != payload:
                    continue
                cost = median(m["cost"] for m in ms)
                in_sluice = GIB / 1e6 / cost if cost and cost > 0 else 0
                ratio = median(m["ratio"] for m in ms)
                rows.append(f"| {labels[n]} | {payload} | {median(m['cpg'] for m in ms):.2f} | {cost or 0:.2f} | {in_sluice:.0f} | "
                            f"{median(m['raw'] for m in ms) or 0:.0f} | {f'{ratio:.2f}' if ratio else ''} | "
                            f"{median(m['mb_per_s'] for m in ms):.0f} |")
        scale = many["mb_per_s"] / one["mb_per_s"] if one["mb_per_s"] else 0
        growth = (mem["both"]["server_rss_peak_kib"] - mem["pass"]["server_rss_peak_kib"]) / 64
        md = ("Uploads of 16 MiB, 2 at a time, into the same disk sink through each pipeline (2 GiB a run for the "
              "sha256 and crc32 pipelines, 512 MiB for the others); a stage's cost is its pipeline's server CPU per GiB "
              "minus that of the pass-through runs of the same size just before and after it, and its raw rate is "
              "measured right after it (Python's zlib and hashlib — system libz, OpenSSL — on a landed pass-through "
              f"file): this machine's CPU speed drifts from minute to minute. {rounds} round{'s' if rounds != 1 else ''}; "
              "the table shows medians, the ratio is the median of each round's ratio. "
              "Goal: within 10% (Sluice ÷ raw 0.9–1.1).\n\n"
              + "\n".join(rows) +
              f"\n\n- compress 1 + sha256, text: 1 upload {one['mb_per_s']:.0f} MB/s, 4 concurrent {many['mb_per_s']:.0f} MB/s: "
              f"**{scale:.2f}×** (goal ≥ 1.7× {'✓' if scale >= 1.7 else '✗'})"
              f"\n- memory, 64 uploads at 1 MiB/s each: pass-through peak {mem['pass']['server_rss_peak_kib'] / 1024:.1f} MiB, "
              f"compress+hash {mem['both']['server_rss_peak_kib'] / 1024:.1f} MiB: **{growth:.0f} KiB per active upload** "
              f"(goal ≤ 512 KiB {'✓' if growth <= 512 else '✗'})")
        self.sections.append(("Stage costs (issue #4)", md))

    def section_memory(self):
        data = self.work / "data"
        hold_for = "3s" if self.args.smoke else "15s" if self.quick else "30s"
        sl, why = self.sluice_server("sluice", "tcp-slow.yaml", free_port(), data)
        if sl is None:
            self.sections.append(("Memory under a slow sink", f"n/a: {why}"))
            return

        def run(server):
            # 256 × 256 MiB at 50 MB/s in all would take 22 minutes: the uploads are cut (reset by the
            # generator's --timeout) after `hold_for`; RSS is what matters.
            return self.measure(server, "--target", f"127.0.0.1:{server.port}", "--concurrency", 256, "--size", self.size("256MiB"),
                                "--count", 256, "--timeout", hold_for)
        r = self.with_server(sl, run)
        if r is None:
            self.sections.append(("Memory under a slow sink", "sluice failed to start"))
            return
        md = (f"256 concurrent 256 MiB uploads into a disk sink behind `rate_limit` (50 MB/s, scope pipeline), cut after "
              f"{hold_for}. Bytes sent by the generator: {r['bytes_sent'] / MIB:.0f} MiB; landed: {r['landed_bytes'] / MIB:.0f} MiB.\n\n"
              f"- tcp: server RSS {r['server_rss_base_kib'] / 1024:.1f} MiB idle → **{r['server_rss_peak_kib'] / 1024:.1f} MiB peak** "
              f"(goal < 128 MiB {'✓' if r['server_rss_peak_kib'] < 128 * 1024 else '✗'})")
        # The same through the http receiver (PUTs with a 256 MiB Content-Length); no goal in the issues.
        hs, _ = self.sluice_server("sluice-http", "http-slow.yaml", free_port(), data)
        if hs is not None:
            h = self.with_server(hs, lambda server: self.measure(
                server, "--mode", "http", "--target", f"http://127.0.0.1:{server.port}/upload/", "--concurrency", 256,
                "--size", self.size("256MiB"), "--count", 256, "--timeout", hold_for))
            if h is not None:
                md += (f"\n- http: server RSS {h['server_rss_base_kib'] / 1024:.1f} MiB idle → "
                       f"**{h['server_rss_peak_kib'] / 1024:.1f} MiB peak**")
        self.sections.append(("Memory under a slow sink", md))

    def section_hold(self):
        data = self.work / "data"
        n = 200 if self.args.smoke else 2000 if self.quick else 10000
        hold_for = "3s" if self.args.smoke else "10s" if self.quick else "20s"
        servers = []
        sl, why = self.sluice_server("sluice", "tcp-hold.yaml", free_port(), data)
        servers.append(sl or ("sluice", why))
        servers.append(self.asyncio_server("asyncio-64k-plain", free_port(), data, 65536, "plain"))
        servers.append(self.nginx_server(free_port(), data))
        out = ["| server | held at end / asked | refused | dropped | RSS idle MiB | RSS while held MiB | growth per connection | RSS peak (incl. teardown) MiB | errors |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        servers = [x for x in servers if self.wanted(x[0] if isinstance(x, tuple) else x.name)]
        for server in servers:
            if isinstance(server, tuple):
                out.append(f"| {server[0]} | n/a: {server[1]} | | | | | | | |")
                continue

            def run(server):
                target = f"http://127.0.0.1:{server.port}/upload/" if server.name == "nginx" else f"127.0.0.1:{server.port}"
                return self.measure(server, "--mode", "hold", "--target", target, "--concurrency", n, "--rate", 2,
                                    "--duration", hold_for, timeout=300)
            r = self.with_server(server, run)
            if r is None:
                out.append(f"| {server.name} | failed to start | | | | | | | |")
                continue
            h = r["hold"]
            growth = (r["server_rss_held_kib"] - r["server_rss_base_kib"]) / max(1, h["opened"])
            out.append(f"| {server.name} | {h['open_at_end']} / {h['requested']} | {h['refused']} | {h['dropped']} | "
                       f"{r['server_rss_base_kib'] / 1024:.1f} | {r['server_rss_held_kib'] / 1024:.1f} | {growth:.1f} KiB | "
                       f"{r['server_rss_peak_kib'] / 1024:.1f} | "
                       + "; ".join(f"{k[:60].replace('|', '/')} ×{v}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]) + " |")
        md = (f"{n} connections each trickling 2 bytes/s for {hold_for} (nginx: inside a PUT body with a 1 GiB "
              f"Content-Length), fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}. Goal for Sluice: all held, "
              f"none dropped, growth < 8 KiB per connection.\n\n" + "\n".join(out))
        self.sections.append(("Held connections", md))

    def run(self):
        wanted = self.args.only.split(",") if self.args.only else SECTIONS
        unknown = set(wanted) - set(SECTIONS)
        if unknown:
            sys.exit(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        # The hold test needs ~10,000 fds in the generator and 10,000–20,000 in a server (a socket plus,
        # for a server that opens the upload's file at once, a file per connection). Raising the hard
        # limit needs root (CAP_SYS_RESOURCE); otherwise the soft limit goes up to the hard one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        started = time.time()
        hot = HotMemory()
        try:
            self.build()
            hot.__enter__()
            self.log(hot.note)
            for section in SECTIONS:
                if section in wanted:
                    try:
                        getattr(self, f"section_{section}")()
                    except Exception as error:  # noqa: BLE001 — one broken section must not lose the others
                        self.log(f"section {section} failed: {error}")
                        self.sections.append((section, f"failed: {error}"))
        finally:
            hot.__exit__(None, None, None)
            # Keep the servers' logs (a crash shows there), drop the data.
            logs = BENCH / "results" / "logs"
            shutil.rmtree(logs, ignore_errors=True)
            logs.parent.mkdir(exist_ok=True)
            shutil.copytree(self.logdir, logs, dirs_exist_ok=True)
            shutil.rmtree(self.work, ignore_errors=True)
        head = (f"# Sluice benchmark\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
                f"{os.cpu_count()} cores, `bench/run.py {' '.join(sys.argv[1:])}`, {time.time() - started:.0f} s. "
                f"Server CPU = utime+stime of the server's process tree; the generator runs on the same cores; {hot.note}.\n")
        md = head + "".join(f"\n## {title}\n\n{body}\n" for title, body in self.sections)
        print(md)
        results = BENCH / "results"
        results.mkdir(exist_ok=True)
        (results / "latest.md").write_text(md)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="smaller counts and shorter runs")
    p.add_argument("--no-build", action="store_true", help="use the existing release build")
    p.add_argument("--sluice", help="use this sluice binary (no build)")
    p.add_argument("--servers", help="comma-separated name fragments: run only matching servers (e.g. sluice,64k)")
    p.add_argument("--smoke", action="store_true", help="sizes ÷ 64, short holds: checks the harness, not the figures")
    Bench(p.parse_args()).run()


if __name__ == "__main__":
    main()
