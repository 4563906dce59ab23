#!/usr/bin/env bash
# lab_script_smoke_directory: docker/lab --no-build --detach --directory on ports chosen now, in a
# temporary lab directory: a loopback slapd with AD's attribute types holding the dev PKI's
# directory/users.ldif, cbagate with auth.mapping = "directory". What the README shows: alice
# (bound by her certificate's SID extension) 200 as alice@lab.test; bob (weak mapping only)
# 403.12 no_strong_mapping; carol (disabled account) 403.12 disabled; the no-upn device
# certificate located by its X509:<SHA1-PUKEY> 200 as nina@lab.test; nothing of the refused ones
# reaches the backend; docker/lab --stop ends cbagate, the mock and slapd.
#   lab_smoke_directory.sh REPO_ROOT   (CBAGATE_BIN and MOCK_EXCHANGE_BIN come from the environment)
set -euo pipefail
repo=$1
: "${CBAGATE_BIN:?set CBAGATE_BIN}" "${MOCK_EXCHANGE_BIN:?set MOCK_EXCHANGE_BIN}"
export PATH="$PATH:/usr/sbin:/sbin"
command -v slapd >/dev/null || { echo "lab_smoke_directory: slapd missing; as root run: tests/support/install-deps kdc" >&2; exit 1; }

tmp=$(mktemp -d)
export CBAGATE_LAB_DIR=$tmp/lab
stopped=0
cleanup() {
  ((stopped)) || "$repo/docker/lab" --stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "lab_smoke_directory: FAIL: $*" >&2; for f in cbagate.log mock.log access.log directory-start.log; do
  [[ -f $CBAGATE_LAB_DIR/$f ]] && { echo "--- $f" >&2; tail -n 20 "$CBAGATE_LAB_DIR/$f" >&2; }; done; exit 1; }
alive() { [[ -r /proc/$1/stat && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Four free loopback ports, held together while chosen so they differ.
read -r LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT LAB_LDAP_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
export LAB_HTTPS_PORT LAB_MOCK_PORT LAB_ADMIN_PORT LAB_LDAP_PORT
export LAB_READY_TIMEOUT=30 LAB_STOP_TIMEOUT=30

rc=0
"$repo/docker/lab" --no-build --detach --directory >"$tmp/lab.out" 2>&1 || rc=$?
((rc == 0)) || { cat "$tmp/lab.out" >&2; fail "docker/lab --no-build --detach --directory exited $rc"; }
grep -q "no_strong_mapping" "$tmp/lab.out" || fail "docker/lab did not show the weakly mapped user"
slapd_pidfile=$CBAGATE_LAB_DIR/directory/slapd/slapd.pid
for f in "$CBAGATE_LAB_DIR/cbagate.pid" "$CBAGATE_LAB_DIR/mock-exchange.pid" "$slapd_pidfile"; do
  [[ -s $f ]] || fail "no $f"
done
cb_pid=$(<"$CBAGATE_LAB_DIR/cbagate.pid")
mock_pid=$(<"$CBAGATE_LAB_DIR/mock-exchange.pid")
slapd_pid=$(tr -dc 0-9 <"$slapd_pidfile")
for pid in "$cb_pid" "$mock_pid" "$slapd_pid"; do alive "$pid" || fail "lab process $pid is not running"; done
grep -q '^mapping = "directory"' "$CBAGATE_LAB_DIR/cbagate.toml" || fail "cbagate.toml is not in directory mode"

pki=$CBAGATE_LAB_DIR/pki
base=https://127.0.0.1:$LAB_HTTPS_PORT
# expect NAME CERT STATUS WHAT: WHAT = the identity header (200) or the refusal code (403.12)
expect() {
  local name=$1 cert=$2 status=$3 what=$4 code
  code=$(curl -sS --max-time 20 --cacert "$pki/ca/root.pem" --cert "$pki/clients/$cert.pem" \
    --key "$pki/clients/$cert.key" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$base/owa/?$name") ||
    fail "curl with $cert failed"
  [[ $code == "$status" ]] || fail "$name: status $code, expected $status: $(cat "$tmp/headers" "$tmp/body")"
  if [[ $status == 200 ]]; then
    grep -qi "^X-Mock-Identity: $what" "$tmp/headers" || fail "$name: the backend did not see $what: $(cat "$tmp/headers")"
  else
    grep -q "^403.12 Forbidden" "$tmp/body" || fail "$name: not a 403.12 page: $(cat "$tmp/body")"
    grep -qF "(cbagate: $what)" "$tmp/body" || fail "$name: no code $what on the page: $(cat "$tmp/body")"
  fi
}
expect alice alice 200 alice@lab.test
expect bob bob 403 no_strong_mapping
expect carol carol 403 disabled
expect nina no-upn 200 nina@lab.test
# The backend saw alice and nina only.
seen=$(grep -o '"target":"[^"]*"' "$CBAGATE_LAB_DIR/mock-requests.jsonl" | sort | tr '\n' ' ')
[[ $seen == '"target":"/owa/?alice" "target":"/owa/?nina" ' ]] || fail "the backend saw: $seen"

"$repo/docker/lab" --stop 2>"$tmp/stop.out" || { cat "$tmp/stop.out" >&2; fail "docker/lab --stop failed"; }
stopped=1
for pid in "$cb_pid" "$mock_pid" "$slapd_pid"; do
  if alive "$pid"; then fail "PID $pid still runs after docker/lab --stop: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"; fi
done
[[ ! -e $slapd_pidfile ]] || ! alive "$slapd_pid" || fail "slapd left behind"
echo "lab_smoke_directory: ok (https $LAB_HTTPS_PORT, ldap $LAB_LDAP_PORT)"
