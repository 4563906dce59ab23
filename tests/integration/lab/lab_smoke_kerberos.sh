#!/usr/bin/env bash
# lab_script_smoke_kerberos: docker/lab --no-build --detach --kerberos on ports chosen now, in a
# temporary lab directory: a real MIT KDC (+ slapd) in LAB_DIR/kdc, mock Exchange requiring
# Negotiate. alice's certificate gets 200 on /owa/ and the backend accepted a delegated ticket
# for alice@LAB.TEST; no certificate gets 403; docker/lab --stop stops cbagate, the mock, the KDC
# and slapd.
#   lab_smoke_kerberos.sh REPO_ROOT   (CBAGATE_BIN and MOCK_EXCHANGE_BIN come from the environment)
set -euo pipefail
repo=$1
: "${CBAGATE_BIN:?set CBAGATE_BIN}" "${MOCK_EXCHANGE_BIN:?set MOCK_EXCHANGE_BIN}"
export PATH="$PATH:/usr/sbin:/sbin"
for tool in krb5kdc slapd; do
  command -v "$tool" >/dev/null || { echo "lab_smoke_kerberos: $tool missing; as root run: tests/support/install-deps kdc" >&2; exit 1; }
done

tmp=$(mktemp -d)
export CBAGATE_LAB_DIR=$tmp/lab
stopped=0
cleanup() {
  ((stopped)) || "$repo/docker/lab" --stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "lab_smoke_kerberos: FAIL: $*" >&2; for f in cbagate.log mock.log access.log kdc-start.log kdc/kdc.log; do
  [[ -f $CBAGATE_LAB_DIR/$f ]] && { echo "--- $f" >&2; tail -n 20 "$CBAGATE_LAB_DIR/$f" >&2; }; done; exit 1; }
# Gone, or at most a zombie awaiting its reaper (none of these is our child).
alive() { [[ -r /proc/$1/stat && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Three free loopback ports, held together while chosen so they differ (start-kdc picks its own).
read -r LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
export LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT
export LAB_READY_TIMEOUT=30 LAB_STOP_TIMEOUT=30

rc=0
"$repo/docker/lab" --no-build --detach --kerberos >"$tmp/lab.out" 2>&1 || rc=$?
((rc == 0)) || { cat "$tmp/lab.out" >&2; fail "docker/lab --no-build --detach --kerberos exited $rc"; }
grep -q "curl -si" "$tmp/lab.out" || fail "docker/lab printed no curl commands"
grep -q "X-Mock-Principal: alice@LAB.TEST" "$tmp/lab.out" || fail "docker/lab did not mention X-Mock-Principal"
kdc=$CBAGATE_LAB_DIR/kdc
for f in cbagate.pid mock-exchange.pid kdc/kdc.pid kdc/ldap/slapd.pid; do
  [[ -s $CBAGATE_LAB_DIR/$f ]] || fail "no $f"
done
cb_pid=$(<"$CBAGATE_LAB_DIR/cbagate.pid")
mock_pid=$(<"$CBAGATE_LAB_DIR/mock-exchange.pid")
kdc_pid=$(tr -dc 0-9 <"$kdc/kdc.pid")
slapd_pid=$(tr -dc 0-9 <"$kdc/ldap/slapd.pid")
for pid in "$cb_pid" "$mock_pid" "$kdc_pid" "$slapd_pid"; do
  alive "$pid" || fail "lab process $pid is not running"
done
grep -q '^mode = "kerberos"' "$CBAGATE_LAB_DIR/cbagate.toml" || fail "cbagate.toml is not in Kerberos mode"

pki=$CBAGATE_LAB_DIR/pki
base=https://127.0.0.1:$LAB_HTTPS_PORT
common=(-sS --max-time 20 --cacert "$pki/ca/root.pem" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}')

code=$(curl "${common[@]}" --cert "$pki/clients/alice.pem" --key "$pki/clients/alice.key" "$base/owa/") || fail "curl with alice failed"
[[ $code == 200 ]] || fail "alice on /owa/: status $code, expected 200: $(cat "$tmp/headers" "$tmp/body")"
grep -qi '^X-Mock-Principal: alice@LAB.TEST' "$tmp/headers" || fail "the backend did not accept a ticket for alice@LAB.TEST: $(cat "$tmp/headers")"
grep -q 'CONSTRAINED-DELEGATION s4u-client=alice@LAB.TEST' "$kdc/kdc.log" || fail "the KDC logged no S4U2Proxy for alice"

code=$(curl "${common[@]}" "$base/owa/") || fail "curl without a certificate failed"
[[ $code == 403 ]] || fail "no certificate on /owa/: status $code, expected 403"

"$repo/docker/lab" --stop 2>"$tmp/stop.out" || { cat "$tmp/stop.out" >&2; fail "docker/lab --stop failed"; }
stopped=1
for pid in "$cb_pid" "$mock_pid" "$kdc_pid" "$slapd_pid"; do
  if alive "$pid"; then fail "PID $pid still runs after docker/lab --stop: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) state $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null); stop said: $(cat "$tmp/stop.out" 2>/dev/null)"; fi
done
for f in cbagate.pid mock-exchange.pid kdc/kdc.pid kdc/ldap/slapd.pid; do
  [[ ! -e $CBAGATE_LAB_DIR/$f ]] || fail "$f left behind"
done
echo "lab_smoke_kerberos: ok (https $LAB_HTTPS_PORT, mock $LAB_MOCK_PORT, admin $LAB_ADMIN_PORT)"
