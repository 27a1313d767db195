#!/usr/bin/env python3
"""Raw speed of the libraries behind Sluice's stages, in MB per CPU-second on one core.

zlib (compress at levels 1 and 6, decompress, crc32) is the system libz, the same one
Sluice links; sha256/sha1/md5 go through OpenSSL (hashlib), close to the BoringSSL
assembly Sluice uses via swift-crypto. Inputs are generated log-like text and random
bytes. These are the "raw" column of the stage benchmark: a stage inside Sluice should
cost within 10% of them per GiB.

    python3 bench/raw-speeds.py [--mib 64] [--chunk 65536] [--repeat 3]
"""
import argparse
import hashlib
import os
import random
import ssl
import time
import zlib


def log_text(size):
    rng = random.Random(42)
    paths = ["/api/v1/items/%d" % i for i in range(300)] + ["/static/app.%x.js" % i for i in range(40)]
    lines = []
    total = 0
    i = 0
    while total < size:
        line = "2026-11-26T17:%02d:%02d.%03dZ host-%d app[%d]: %s %s status=%d bytes=%d ms=%d id=%08x\n" % (
            i // 3600 % 60, i // 60 % 60, i % 1000, rng.randrange(8), 1000 + rng.randrange(97),
            rng.choice(["GET", "GET", "GET", "POST", "PUT"]), rng.choice(paths),
            rng.choice([200] * 20 + [201, 204, 304, 404, 500]), rng.randrange(65536), rng.randrange(2000),
            rng.getrandbits(32))
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()[:size]


def chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def cpu_rate(fn, nbytes, repeat):
    """Best MB (1e6 bytes) per CPU-second over `repeat` runs."""
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        fn()
        elapsed = time.process_time() - start
        best = max(best, nbytes / 1e6 / max(elapsed, 1e-9))
    return best


def compress_stream(parts, level):
    def run():
        c = zlib.compressobj(level, zlib.DEFLATED, 31)
        for p in parts:
            c.compress(p)
        c.flush()
    return run


def decompress_stream(parts):
    def run():
        d = zlib.decompressobj(31)
        for p in parts:
            d.decompress(p)
        d.flush()
    return run


def hash_stream(parts, name):
    def run():
        h = hashlib.new(name)
        for p in parts:
            h.update(p)
        h.digest()
    return run


def crc_stream(parts):
    def run():
        crc = 0
        for p in parts:
            crc = zlib.crc32(p, crc)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="input size in MiB (default 64)")
    ap.add_argument("--chunk", type=int, default=65536, help="chunk size in bytes (default 65536, Sluice's read size)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is shown (default 3)")
    args = ap.parse_args()
    size = args.mib << 20
    inputs = {"log text": log_text(size), "random": os.urandom(size)}
    print("zlib %s, %s via hashlib; %d MiB inputs in %d-byte chunks; MB = 1e6 bytes of input; best of %d"
          % (zlib.ZLIB_RUNTIME_VERSION, ssl.OPENSSL_VERSION, args.mib, args.chunk, args.repeat))
    rows = []
    for label, data in inputs.items():
        parts = chunks(data, args.chunk)
        for level in (1, 6):
            compressed = zlib.compress(data, level)
            ratio = len(data) / len(compressed)
            rows.append(("compress gzip level %d" % level, label,
                         cpu_rate(compress_stream(parts, level), size, args.repeat), "ratio %.2f" % ratio))
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        packed = gz.compress(data) + gz.flush()
        rows.append(("decompress gzip (output MB)", label,
                     cpu_rate(decompress_stream(chunks(packed, args.chunk)), size, args.repeat), ""))
        for name in ("sha256", "sha1", "md5"):
            rows.append(("hash " + name, label, cpu_rate(hash_stream(parts, name), size, args.repeat), ""))
        rows.append(("hash crc32 (zlib)", label, cpu_rate(crc_stream(parts), size, args.repeat), ""))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %-9s  %14s  %s" % (width, "operation", "input", "MB/CPU-second", ""))
    for op, label, rate, note in rows:
        print("%-*s  %-9s  %14.0f  %s" % (width, op, label, rate, note))


if __name__ == "__main__":
    main()
