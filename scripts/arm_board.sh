#!/usr/bin/env bash
# Start / stop an emulated aarch64 edge board for tvm-deconv: Debian arm64 under qemu-user
# (binfmt_misc), with TVM's RPC server inside, registered as key $KEY to an RPC tracker on
# 127.0.0.1:$TRACKER_PORT.  Adapted from ../shared/arm/bringup.sh.
#
#   bash scripts/arm_board.sh start    # as root; first run 5-20 min (2 busy cores), ~1.5 GB;
#                                      # later ~30 s; starts only what is missing (tracker/server)
#   bash scripts/arm_board.sh status   # exit 0 when the board is registered to the tracker
#   bash scripts/arm_board.sh check    # exit 0 when this machine can host the board at all
#   bash scripts/arm_board.sh stop
#
# then:  tvm-deconv tune --target cortex-a72 --layers dcgan_512_256_k4s2 --work-dir w \
#            --trials 4 --rpc-tracker 127.0.0.1:9190 --rpc-key aarch64-qemu
#        python -m pytest -m board tests/test_arm.py
#
# Emulated timings are NOT board timings (vectorised code is only ~1.1x faster than naive
# under qemu; Spearman 0.44 against native): use it for correctness and to exercise the
# RPC/tuning path; rank schedules on a real board registered to the same tracker.
# Needs root (binfmt_misc, chroot, debootstrap), Debian's and PyPI's package registries.
# Where binfmt_misc cannot be mounted (unprivileged containers) it exits 3 and says so.
set -euo pipefail
B="${BOARD_DIR:-/tmp/tvm-board}"; R="$B/rootfs"
TRACKER_PORT="${TRACKER_PORT:-9190}"; SERVER_PORT="${SERVER_PORT:-9090}"; KEY="${KEY:-aarch64-qemu}"
PINS="apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0"  # ffi 0.1.15.post2 segfaults in save_json
HOSTPY="${HOSTPY:-python3}"   # a host python with the same TVM pins (the project's venv)
cmd="${1:-start}"

# Exit 0: $KEY registered; 1: tracker up, no $KEY; 2: no tracker.  TVM's tracker protocol in
# plain Python (query_rpc_tracker imports TVM: ~10 s a call on a busy 2-core machine).
tracker_state() {
  "$HOSTPY" - "$TRACKER_PORT" "$KEY" <<'EOF'
import json, socket, struct, sys
port, key = int(sys.argv[1]), sys.argv[2]
def recv(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("tracker closed the connection")
        buf += chunk
    return buf
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack("<i", 0x2F271))                    # RPC_TRACKER_MAGIC
        assert struct.unpack("<i", recv(sock, 4))[0] == 0x2F271
        msg = json.dumps([6]).encode()                               # TrackerCode.SUMMARY
        sock.sendall(struct.pack("<i", len(msg)) + msg)
        summary = json.loads(recv(sock, struct.unpack("<i", recv(sock, 4))[0]))[1]
except (OSError, AssertionError):
    sys.exit(2)
sys.exit(0 if any(s["key"] == "server:" + key for s in summary["server_info"]) else 1)
EOF
}

binfmt_ready() {
  mountpoint -q /proc/sys/fs/binfmt_misc 2>/dev/null \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || return 1
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && return 0
  [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ] || return 0   # registered after apt install
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register 2>/dev/null
}

kill_group() {  # by process group: the server's worker child otherwise keeps the port
  [ -f "$B/$1.pgid" ] && kill -- -"$(cat "$B/$1.pgid")" 2>/dev/null || true; rm -f "$B/$1.pgid"
}

wait_for() {  # wait_for SECONDS STATE...: until tracker_state is one of STATE
  local state
  for _ in $(seq "$1"); do
    state=0; tracker_state || state=$?
    for want in "${@:2}"; do [ "$state" = "$want" ] && return 0; done
    sleep 1
  done
  return 1
}

case "$cmd" in
  stop)
    kill_group server; kill_group tracker
    mountpoint -q "$R/proc" && umount "$R/proc" || true
    exit 0 ;;
  status)
    if tracker_state; then echo "board $KEY registered at 127.0.0.1:$TRACKER_PORT"; exit 0; fi
    echo "no board $KEY at 127.0.0.1:$TRACKER_PORT"; exit 1 ;;
  check)
    [ "$(id -u)" = 0 ] || { echo "needs root (binfmt_misc, chroot)"; exit 3; }
    binfmt_ready || { echo "binfmt_misc cannot be mounted here (unprivileged container?)"; exit 3; }
    echo "this machine can host the emulated board"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop|status|check" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "arm_board.sh start needs root (binfmt_misc, chroot)" >&2; exit 3; }
if tracker_state; then echo "board $KEY already registered at 127.0.0.1:$TRACKER_PORT"; exit 0; fi
mkdir -p "$B"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static gcc-aarch64-linux-gnu \
    libc6-dev-arm64-cross debootstrap
fi
binfmt_ready || { echo "binfmt_misc cannot be mounted here (unprivileged container?): no board" >&2; exit 3; }
if [ ! -x "$R/usr/bin/python3.11" ]; then
  MIRROR="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')"
  [ -n "$MIRROR" ] || MIRROR="$(grep -h '^deb ' /etc/apt/sources.list | head -1 | awk '{print $2}')"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm "$R" "$MIRROR"
fi
mountpoint -q "$R/proc" || mount -t proc proc "$R/proc"
if [ ! -x "$R/opt/tvmenv/bin/python" ] || [ ! -f "$R/opt/tvmenv/.complete" ]; then
  mkdir -p "$R/wheels"
  "$HOSTPY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
      --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
      -d "$R/wheels" $PINS tornado psutil cloudpickle
  env -i PATH=/usr/bin:/bin /usr/sbin/chroot "$R" python3 -m venv /opt/tvmenv
  env -i PATH=/usr/bin:/bin /usr/sbin/chroot "$R" /opt/tvmenv/bin/pip install -q --no-index \
      --find-links /wheels $PINS tornado psutil cloudpickle
  touch "$R/opt/tvmenv/.complete"   # an interrupted install is redone, not half-used
fi
# tracker on the host, emulated server registering to it; each in its own process group.
# Only what is missing is started: after a killed server the tracker (and its queue) stays.
state=0; tracker_state || state=$?
if [ "$state" = 2 ]; then
  kill_group tracker
  setsid nohup "$HOSTPY" -m tvm.exec.rpc_tracker --host 127.0.0.1 --port "$TRACKER_PORT" \
      --port-end $((TRACKER_PORT+1)) > "$B/tracker.log" 2>&1 & echo $! > "$B/tracker.pgid"
  wait_for 60 0 1 || { echo "the tracker did not start; see $B/tracker.log" >&2; exit 1; }
fi
if ! tracker_state; then
  kill_group server
  # TVM_USE_RUNTIME_LIB=1 needs libtvm_runtime_extra.so, else every MetaSchedule trial fails on
  # random_fill_for_measure.
  setsid nohup env -i PATH=/usr/bin:/bin TVM_USE_RUNTIME_LIB=1 /usr/sbin/chroot "$R" \
      /opt/tvmenv/bin/python -m tvm.exec.rpc_server --host 127.0.0.1 --port "$SERVER_PORT" \
      --port-end $((SERVER_PORT+1)) --tracker 127.0.0.1:"$TRACKER_PORT" --key "$KEY" \
      --load-library /opt/tvmenv/lib/python3.11/site-packages/tvm/lib/libtvm_runtime_extra.so \
      > "$B/server.log" 2>&1 & echo $! > "$B/server.pgid"
fi
if wait_for 180 0; then echo "board $KEY registered at 127.0.0.1:$TRACKER_PORT"; exit 0; fi
echo "the board did not register; see $B/server.log and $B/tracker.log" >&2; exit 1
