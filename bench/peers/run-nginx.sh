#!/usr/bin/env bash
# Runs nginx in the foreground as a WebDAV PUT server writing into ROOT/upload/.
#   bench/peers/run-nginx.sh --port 8081 --root /tmp/x [--workers auto|1|N] [--tls CERT.pem KEY.pem]
# Uses a temporary prefix (config, pid, error log); PUT /upload/<name> lands in ROOT/upload/<name>.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port=8081 root="" workers=auto cert="" key=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --tls) cert="$2" key="$3"; shift 3 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$root" ] || { echo "--root is required" >&2; exit 2; }
mkdir -p "$root/upload" "$root/.nginx-body"
prefix="$(mktemp -d /tmp/sluice-bench-nginx.XXXXXX)"
trap 'rm -rf "$prefix"' EXIT
sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" -e "s|@ROOT@|$root|g" -e "s|@WORKERS@|$workers|g" \
    "$here/nginx-webdav.conf" > "$prefix/nginx.conf"
# HTTPS: the same server block, listening with ssl on the given certificate and key.
if [ -n "$cert" ]; then
    sed -i -e "s|listen 127.0.0.1:$port |listen 127.0.0.1:$port ssl |" \
        -e "s|        root $root;|        root $root;\n        ssl_certificate $cert;\n        ssl_certificate_key $key;|" "$prefix/nginx.conf"
fi
# Running as root, nginx's workers would switch to "nobody", who cannot write ROOT: keep the caller's user.
if [ "$(id -u)" = 0 ]; then sed -i "1i user root;" "$prefix/nginx.conf"; fi
echo "nginx: listening on 127.0.0.1:$port (workers $workers${cert:+, TLS}), root $root"
# exec would lose the trap; nginx stops on SIGTERM/SIGQUIT forwarded by the caller.
nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; rm -rf "$prefix"' EXIT TERM INT
wait $pid
