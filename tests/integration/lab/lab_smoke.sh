#!/usr/bin/env bash
# lab_script_smoke: docker/lab --no-build --detach on ports chosen now, in a temporary lab
# directory; alice's certificate gets 200 on /owa/ with her UPN at the backend, no certificate
# gets 403; docker/lab --stop stops both processes.
#   lab_smoke.sh REPO_ROOT   (CBAGATE_BIN and MOCK_EXCHANGE_BIN come from the environment)
set -euo pipefail
repo=$1
: "${CBAGATE_BIN:?set CBAGATE_BIN}" "${MOCK_EXCHANGE_BIN:?set MOCK_EXCHANGE_BIN}"

tmp=$(mktemp -d)
export CBAGATE_LAB_DIR=$tmp/lab
stopped=0
cleanup() {
  ((stopped)) || "$repo/docker/lab" --stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "lab_smoke: FAIL: $*" >&2; for f in cbagate.log mock.log access.log; do
  [[ -f $CBAGATE_LAB_DIR/$f ]] && { echo "--- $f" >&2; tail -n 20 "$CBAGATE_LAB_DIR/$f" >&2; }; done; exit 1; }

# Three free loopback ports, held together while chosen so they differ.
read -r LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
export LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT
export LAB_READY_TIMEOUT=30 LAB_STOP_TIMEOUT=30

rc=0
"$repo/docker/lab" --no-build --detach >"$tmp/lab.out" 2>&1 || rc=$?
((rc == 0)) || { cat "$tmp/lab.out" >&2; fail "docker/lab --no-build --detach exited $rc"; }
grep -q "curl -si" "$tmp/lab.out" || fail "docker/lab printed no curl commands"
for name in cbagate mock-exchange; do
  [[ -s $CBAGATE_LAB_DIR/$name.pid ]] || fail "no $name.pid"
done
cb_pid=$(<"$CBAGATE_LAB_DIR/cbagate.pid")
mock_pid=$(<"$CBAGATE_LAB_DIR/mock-exchange.pid")
if ! { kill -0 "$cb_pid" && kill -0 "$mock_pid"; }; then fail "lab processes are not running"; fi

pki=$CBAGATE_LAB_DIR/pki
base=https://127.0.0.1:$LAB_HTTPS_PORT
common=(-sS --max-time 10 --cacert "$pki/ca/root.pem" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}')

code=$(curl "${common[@]}" --cert "$pki/clients/alice.pem" --key "$pki/clients/alice.key" "$base/owa/") || fail "curl with alice failed"
[[ $code == 200 ]] || fail "alice on /owa/: status $code, expected 200"
grep -qi '^X-Mock-Identity: alice@lab.test' "$tmp/headers" || fail "the backend did not see alice@lab.test: $(cat "$tmp/headers")"

code=$(curl "${common[@]}" "$base/owa/") || fail "curl without a certificate failed"
[[ $code == 403 ]] || fail "no certificate on /owa/: status $code, expected 403"

code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LAB_ADMIN_PORT/metrics") || fail "curl /metrics failed"
[[ $code == 200 ]] || fail "/metrics: status $code"

"$repo/docker/lab" --stop 2>"$tmp/stop.out" || { cat "$tmp/stop.out" >&2; fail "docker/lab --stop failed"; }
stopped=1
for pid in "$cb_pid" "$mock_pid"; do
  # Not our children: a stopped process is gone or, at most, a zombie awaiting its reaper.
  if [[ -r /proc/$pid/stat && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
    fail "PID $pid still runs after docker/lab --stop: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) state $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null); stop said: $(cat "$tmp/stop.out" 2>/dev/null)"
  fi
done
[[ ! -e $CBAGATE_LAB_DIR/cbagate.pid && ! -e $CBAGATE_LAB_DIR/mock-exchange.pid ]] || fail "pid files left behind"
echo "lab_smoke: ok (https $LAB_HTTPS_PORT, mock $LAB_MOCK_PORT, admin $LAB_ADMIN_PORT)"
