#!/usr/bin/env bash
# docker_lab: the container image builds and docker/compose.yaml runs the lab from it.
#   docker_lab_test.sh REPO_ROOT
#
# 1. Base images debian:12 and debian:12-slim without a registry (docker/base-images: mmdebstrap,
#    tarballs cached in CBAGATE_TEST_CACHE, default /var/cache/cbagate-test).
# 2. podman build of docker/Dockerfile, targets cbagate and kdc, tagged per clone
#    (localhost/cbagate-test-<hash of REPO_ROOT>:lab, :lab-kdc); podman's layer cache and the
#    Dockerfile's ccache mount are reused by the next run.
# 3. docker-compose (the project's compose tool) over podman's Docker API, on a socket of its own,
#    project name and host ports chosen now, `--profile kerberos --profile directory up`: the default lab must answer
#    alice's certificate with 200 and X-Mock-Identity: alice@lab.test, no certificate with 403.7,
#    the revoked certificate with 403.13; the Kerberos lab 200 with X-Mock-Principal: alice@LAB.TEST
#    (the KDC logging the S4U2Proxy). `down -v` must leave no container of the project behind.
#
# Exits 77 (ctest SKIP_RETURN_CODE) with "docker_lab: SKIP: <reason>" only where podman cannot
# run: not installed, not root, `podman info` fails, or no container starts even with runc.
# Where the sandbox refuses crun (no CAP_SYS_RESOURCE for rlimits, hybrid cgroups) it runs with
# a private containers.conf: runtime runc and the ulimits this process may set.
# Without systemd, podman does not run healthchecks itself: this script runs them (compose's
# `condition: service_healthy` waits for them).
set -euo pipefail
repo=$(cd "${1:?usage: docker_lab_test.sh REPO_ROOT}" && pwd)
cache=${CBAGATE_TEST_CACHE:-/var/cache/cbagate-test}
deadline=${DOCKER_LAB_TIMEOUT:-3000}   # seconds, for each build and each compose up (generous: a loaded machine)
export PATH="$PATH:/usr/sbin:/sbin"

say() { echo "docker_lab: $*"; }
skip() { echo "docker_lab: SKIP: $*"; exit 77; }
t0=$SECONDS
phase() { say "[$((SECONDS - t0)) s] $*"; }

command -v podman >/dev/null || skip "podman is not installed (as root: tests/support/install-deps docker)"
[[ $(id -u) -eq 0 ]] || skip "needs root (rootful podman, mmdebstrap root mode); running as uid $(id -u)"
podman info >/dev/null 2>"${TMPDIR:-/tmp}/docker_lab.info.$$" \
  || { err=$(cat "${TMPDIR:-/tmp}/docker_lab.info.$$"); rm -f "${TMPDIR:-/tmp}/docker_lab.info.$$"; skip "podman info fails: $err"; }
rm -f "${TMPDIR:-/tmp}/docker_lab.info.$$"
for tool in docker-compose mmdebstrap curl python3; do
  command -v "$tool" >/dev/null || { echo "docker_lab: FAIL: '$tool' missing; as root run: tests/support/install-deps docker test" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/docker_lab.XXXXXX)
proj=cbagatetest$$
svc_pid=""
health_pid=""
compose=(docker-compose -f "$repo/docker/compose.yaml" --profile kerberos --profile directory)
down_done=0

# Our containers, volumes and networks carry the compose project label; nothing else is touched.
leftovers() { podman ps -a -q --filter "label=com.docker.compose.project=$proj"; }
cleanup() {
  local rc=$?
  set +e
  if ((!down_done)) && [[ -n $svc_pid ]]; then
    timeout 120 "${compose[@]}" down -v >/dev/null 2>&1 || timeout 120 "${compose[@]}" down -v >/dev/null 2>&1
  fi
  local ids; ids=$(leftovers)
  [[ -z $ids ]] || podman rm -f -t 5 $ids >/dev/null 2>&1
  for v in $(podman volume ls -q --filter "label=com.docker.compose.project=$proj" 2>/dev/null); do podman volume rm -f "$v" >/dev/null 2>&1; done
  for n in $(podman network ls -q --filter "label=com.docker.compose.project=$proj" 2>/dev/null); do podman network rm -f "$n" >/dev/null 2>&1; done
  [[ -z $health_pid ]] || { kill "$health_pid" 2>/dev/null; wait "$health_pid" 2>/dev/null; }
  [[ -z $svc_pid ]] || { kill "$svc_pid" 2>/dev/null; wait "$svc_pid" 2>/dev/null; }
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
  echo "docker_lab: FAIL: $*" >&2
  if [[ -n $svc_pid ]]; then
    "${compose[@]}" ps >&2 2>&1 || true
    for c in $(leftovers); do
      echo "--- logs of $(podman inspect --format '{{.Name}}' "$c" 2>/dev/null)" >&2
      podman logs --tail 30 "$c" >&2 2>&1 || true
    done
  fi
  exit 1
}

# 1. Base images.
phase "base images (cache $cache)"
"$repo/docker/base-images" --cache "$cache" || fail "docker/base-images failed"

# Can a container start? If not with the defaults, with runc and the ulimits allowed here.
if ! podman run --rm debian:12-slim true >"$tmp/probe.out" 2>&1; then
  say "podman run fails with the default configuration: $(tr '\n' ' ' <"$tmp/probe.out")"
  command -v runc >/dev/null || fail "runc missing (as root: tests/support/install-deps docker)"
  # The hard limits of this process; podman caps conmon's nproc at kernel.pid_max, and the
  # container cannot raise it from there without CAP_SYS_RESOURCE.
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu) pid_max=$(cat /proc/sys/kernel/pid_max)
  [[ $nofile != unlimited ]] || nofile=1048576
  [[ $nproc != unlimited && $nproc -le $pid_max ]] || nproc=$pid_max
  cat >"$tmp/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$tmp/containers.conf
  podman run --rm debian:12-slim true >"$tmp/probe.out" 2>&1 \
    || skip "podman cannot start a container here, even with runc: $(tr '\n' ' ' <"$tmp/probe.out")"
  say "using runc and ulimits nofile=$nofile nproc=$nproc ($CONTAINERS_CONF)"
fi

# 2. The image, both targets compose uses.
image=localhost/cbagate-test-$(printf '%s' "$repo" | sha256sum | cut -c1-12)
for target in cbagate kdc; do
  tag=$image:lab
  [[ $target == kdc ]] && tag=$image:lab-kdc
  phase "podman build --target $target -t $tag"
  old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  timeout "$deadline" podman build -f "$repo/docker/Dockerfile" --target "$target" -t "$tag" "$repo" \
    >"$tmp/build-$target.log" 2>&1 || { tail -n 60 "$tmp/build-$target.log" >&2; fail "podman build --target $target failed"; }
  grep -E '^runtime packages:' "$tmp/build-$target.log" || true
  new=$(podman image inspect --format '{{.Id}}' "$tag")
  # The image this tag named before is garbage now (its layers stay in the cache while used).
  if [[ -n $old && $old != "$new" ]]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
done
export CBAGATE_LAB_IMAGE=$image:lab CBAGATE_LAB_KDC_IMAGE=$image:lab-kdc
[[ $(podman run --rm "$CBAGATE_LAB_IMAGE" id -u) == 10001 ]] || fail "the image does not run as uid 10001 (cbagate)"

# 3. docker-compose over podman's Docker API.
phase "podman system service on $tmp/podman.sock"
podman system service --time=0 "unix://$tmp/podman.sock" >"$tmp/service.log" 2>&1 &
svc_pid=$!
ok=0
for _ in $(seq 1 300); do   # bounded: normally up within a second
  if [[ $(curl -s --max-time 5 --unix-socket "$tmp/podman.sock" http://d/_ping 2>/dev/null) == OK ]]; then ok=1; break; fi
  kill -0 "$svc_pid" 2>/dev/null || break
  sleep 0.2
done
((ok)) || { cat "$tmp/service.log" >&2; fail "podman system service does not answer on $tmp/podman.sock"; }
export DOCKER_HOST=unix://$tmp/podman.sock COMPOSE_PROJECT_NAME=$proj

if [[ ! -d /run/systemd/system ]]; then
  # podman schedules healthchecks with systemd timers; without systemd run them here, for this
  # project's containers only, until the script ends.
  ( while :; do
      for c in $(podman ps -q --filter "label=com.docker.compose.project=$proj" --filter health=starting 2>/dev/null); do
        podman healthcheck run "$c" >/dev/null 2>&1 || true
      done
      sleep 1
    done ) &
  health_pid=$!
fi

# Six free loopback ports, held together while chosen so they differ.
read -r CBAGATE_LAB_HTTPS_PORT CBAGATE_LAB_ADMIN_PORT CBAGATE_LAB_KERBEROS_HTTPS_PORT CBAGATE_LAB_KERBEROS_ADMIN_PORT \
  CBAGATE_LAB_DIRECTORY_HTTPS_PORT CBAGATE_LAB_DIRECTORY_ADMIN_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
export CBAGATE_LAB_HTTPS_PORT CBAGATE_LAB_ADMIN_PORT CBAGATE_LAB_KERBEROS_HTTPS_PORT CBAGATE_LAB_KERBEROS_ADMIN_PORT \
  CBAGATE_LAB_DIRECTORY_HTTPS_PORT CBAGATE_LAB_DIRECTORY_ADMIN_PORT

# Both labs in one `up`: a second `up` with another profile fails under podman on the `scale`
# network's fixed IPAM ("needs to be recreated - IPAM option driver has changed").
phase "docker-compose --profile kerberos --profile directory up -d (project $proj, https $CBAGATE_LAB_HTTPS_PORT, $CBAGATE_LAB_KERBEROS_HTTPS_PORT and $CBAGATE_LAB_DIRECTORY_HTTPS_PORT)"
timeout "$deadline" "${compose[@]}" up -d --no-build >"$tmp/up.log" 2>&1 \
  || { cat "$tmp/up.log" >&2; fail "docker-compose --profile kerberos --profile directory up -d failed"; }
# wait_healthy SERVICE: compose waits for the services others depend on, not for the last ones.
wait_healthy() {
  local id status=""
  id=$("${compose[@]}" ps -q "$1")
  [[ -n $id ]] || fail "no $1 container"
  for _ in $(seq 1 600); do   # bounded (2 min): the healthcheck passes within seconds
    status=$(podman inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null || true)
    [[ $status == starting ]] || break
    sleep 0.2
  done
  [[ $status == healthy ]] || fail "$1 is $status, not healthy"
  echo "$id"
}
cbagate_id=$(wait_healthy cbagate)
podman cp "$cbagate_id:/lab/pki" "$tmp/pki" || fail "podman cp of /lab/pki failed"
pki=$tmp/pki

# request PORT NAME [curl options]: status into $code, headers and body into $tmp/NAME.*
request() {
  local port=$1 name=$2; shift 2
  code=$(curl -sS --max-time 30 --cacert "$pki/ca/root.pem" -D "$tmp/$name.headers" -o "$tmp/$name.body" \
    -w '%{http_code}' "$@" "https://127.0.0.1:$port/owa/") || fail "curl ($name) failed"
}
alice=(--cert "$pki/clients/alice.pem" --key "$pki/clients/alice.key")
revoked=(--cert "$pki/clients/revoked.pem" --key "$pki/clients/revoked.key")

request "$CBAGATE_LAB_HTTPS_PORT" alice "${alice[@]}"
[[ $code == 200 ]] || fail "alice on /owa/: status $code, expected 200: $(cat "$tmp/alice.headers" "$tmp/alice.body")"
grep -qi '^X-Mock-Identity: alice@lab.test' "$tmp/alice.headers" \
  || fail "the backend did not see alice@lab.test: $(cat "$tmp/alice.headers")"
request "$CBAGATE_LAB_HTTPS_PORT" nocert
[[ $code == 403 ]] && grep -q '^403\.7 ' "$tmp/nocert.body" \
  || fail "no certificate on /owa/: status $code, body '$(cat "$tmp/nocert.body")', expected 403.7"
request "$CBAGATE_LAB_HTTPS_PORT" revoked "${revoked[@]}"
[[ $code == 403 ]] && grep -q '^403\.13 ' "$tmp/revoked.body" \
  || fail "revoked certificate on /owa/: status $code, body '$(cat "$tmp/revoked.body")', expected 403.13"
say "default lab: alice 200 (X-Mock-Identity: alice@lab.test), no certificate 403.7, revoked 403.13"

wait_healthy cbagate-kerberos >/dev/null
request "$CBAGATE_LAB_KERBEROS_HTTPS_PORT" kerberos "${alice[@]}"
[[ $code == 200 ]] || fail "Kerberos lab, alice on /owa/: status $code, expected 200: $(cat "$tmp/kerberos.headers" "$tmp/kerberos.body")"
grep -qi '^X-Mock-Principal: alice@LAB.TEST' "$tmp/kerberos.headers" \
  || fail "the Kerberos backend did not accept a ticket for alice@LAB.TEST: $(cat "$tmp/kerberos.headers")"
kdc_id=$("${compose[@]}" ps -q kdc)
podman exec "$kdc_id" grep -q 'CONSTRAINED-DELEGATION s4u-client=alice@LAB.TEST' /lab/kdc/kdc.log \
  || fail "the KDC logged no S4U2Proxy for alice@LAB.TEST"
say "Kerberos lab: alice 200 (X-Mock-Principal: alice@LAB.TEST), S4U2Proxy in the KDC log"

wait_healthy cbagate-directory >/dev/null
d=$CBAGATE_LAB_DIRECTORY_HTTPS_PORT
# directory_expect NAME CERT STATUS WHAT: WHAT = the identity the backend saw (200) or the code.
directory_expect() {
  local name=$1 cert=$2 status=$3 what=$4
  request "$d" "dir-$name" --cert "$pki/clients/$cert.pem" --key "$pki/clients/$cert.key"
  [[ $code == "$status" ]] || fail "directory lab, $name: status $code, expected $status: $(cat "$tmp/dir-$name.headers" "$tmp/dir-$name.body")"
  if [[ $status == 200 ]]; then
    grep -qi "^X-Mock-Identity: $what" "$tmp/dir-$name.headers" || fail "directory lab, $name: the backend did not see $what"
  else
    grep -q "^403\.12 .*(cbagate: $what)" "$tmp/dir-$name.body" || fail "directory lab, $name: '$(cat "$tmp/dir-$name.body")', expected 403.12 $what"
  fi
}
directory_expect alice alice 200 alice@lab.test
directory_expect bob bob 403 no_strong_mapping
directory_expect carol carol 403 disabled
directory_expect nina no-upn 200 nina@lab.test
say "directory lab: alice 200, bob 403.12 no_strong_mapping, carol 403.12 disabled, no-upn 200 as nina@lab.test"

phase "docker-compose down -v"
# podman refuses to remove the kdc and directory containers (each the network namespace of two others) while they
# exist, and compose removes in parallel: a second down finishes the job.
timeout 300 "${compose[@]}" down -v >"$tmp/down.log" 2>&1 || timeout 300 "${compose[@]}" down -v >>"$tmp/down.log" 2>&1 \
  || { cat "$tmp/down.log" >&2; fail "docker-compose down -v failed twice"; }
down_done=1
[[ -z $(leftovers) ]] || fail "containers of project $proj remain after down -v: $(leftovers | tr '\n' ' ')"
phase "ok"
