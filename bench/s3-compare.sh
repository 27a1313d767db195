#!/usr/bin/env bash
# Sluice's s3 sink against aws-cli, into the same SeaweedFS, in the same run (issue #6).
#
#   bench/s3-compare.sh [--no-build]
#
# Starts SeaweedFS (scripts/s3-server.sh), builds bench/s3-bench in release, then puts
# 1 × 1 GiB and 16 × 64 MiB with aws-cli (`aws s3 cp`, files of random bytes; the
# directory with --recursive, aws-cli's own concurrency) and with s3-bench (8 MiB parts,
# 2 in parallel per upload, as aws-cli's defaults), and prints MiB/s and the ratios.
# Finally the memory figure: 16 concurrent 1 GiB uploads, peak RSS of the process.
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
[ "${1:-}" = "--no-build" ] && build=0
eval "$(scripts/s3-server.sh start)"
[ "$build" = 1 ] && swift build -c release --product s3-bench >&2
bench=.build/release/s3-bench
work="$(mktemp -d "$PWD/.bench-s3.XXXXXX")"
# About 20 GiB of objects per run: removed at the end (SeaweedFS reclaims the volume space
# when it vacuums; `scripts/s3-server.sh stop` and removing its data directory frees it at once).
cleanup() {
    rm -rf "$work"
    aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/compare/" --recursive --only-show-errors || true
    aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/bench/" --recursive --only-show-errors || true
}
trap cleanup EXIT
mkdir -p "$work/many"
head -c 1G /dev/urandom > "$work/one"
for i in $(seq 1 16); do head -c 64M /dev/urandom > "$work/many/part-$i"; done
seconds() { python3 -c 'import sys,time; t=time.monotonic(); import subprocess; subprocess.run(sys.argv[1:], check=True); print(f"{time.monotonic()-t:.2f}")' "$@"; }

echo "| objects | aws-cli MiB/s | sluice MiB/s | sluice ÷ aws-cli |"
echo "|---|---:|---:|---:|"
for case in "1 1GiB 1024" "16 64MiB 1024"; do
    set -- $case
    count=$1 size=$2 mib=$3
    if [ "$count" = 1 ]; then
        t=$(seconds aws --endpoint-url "$S3_ENDPOINT" s3 cp "$work/one" "s3://$S3_BUCKET/compare/aws-one" --only-show-errors)
    else
        t=$(seconds aws --endpoint-url "$S3_ENDPOINT" s3 cp "$work/many" "s3://$S3_BUCKET/compare/aws-many/" --recursive --only-show-errors)
    fi
    aws_rate=$(python3 -c "print(f'{$mib/$t:.1f}')")
    line=$("$bench" --count "$count" --size "$size" --part-size 8MiB --parallel-parts 2 --max-memory 1GiB | tail -1)
    sluice_rate=$(echo "$line" | sed -E 's/.*= ([0-9.]+) MiB\/s.*/\1/')
    ratio=$(python3 -c "print(f'{$sluice_rate/$aws_rate:.2f}')")
    echo "| $count × $size | $aws_rate | $sluice_rate | ${ratio}× |"
done
echo
echo "16 concurrent 1 GiB uploads, 8 MiB parts, 2 in parallel, max_memory 256MiB (goal: peak RSS ≤ 16 × 2 × 8 MiB + 64 MiB = 320 MiB):"
"$bench" --count 16 --size 1GiB --part-size 8MiB --parallel-parts 2 --max-memory 256MiB | tail -1
