#!/usr/bin/env bash
# Run the kvm.snapshots test stages with ansible-test from a build tree.
#
#   tests/run.sh [STAGE...]      STAGE: sanity units integration lint package
#                                (default: sanity units integration)
#   tests/run.sh build           only copy the collection into the build tree
#
# The collection's files (git tracked + untracked-not-ignored, never .venv)
# are copied to $BUILD_DIR/ansible_collections/kvm/snapshots and
# ansible-test runs there. Needs tests/setup.sh to have run.
#
# Environment:
#   PYTHON_VERSION   Python for ansible-test (default 3.11)
#   BUILD_DIR        root of the collections tree, outside any git work tree
#                    (default /tmp/kvm.snapshots-build/<hash of repo path>)
#   SANITY_TEST      space-separated sanity tests to run (default: all)
#   UNITS            space-separated unit test paths, relative to the
#                    collection root (default: all of tests/unit)
#   TARGET           space-separated integration targets (default: all)
#   VERBOSITY        0-4, passed to ansible-test as -v... (default 0)
#
# Prints per-stage summaries and ends with one line "N passed, N failed"
# counting test cases: sanity tests, unit test cases, integration targets,
# ansible-lint runs. Exits non-zero if anything failed.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
# ansible-test looks for .git in the parent directories of the collection, so
# the build tree must live outside the repository: one per clone.
BUILD_DIR="${BUILD_DIR:-${TMPDIR:-/tmp}/kvm.snapshots-build/$(printf '%s' "${REPO_ROOT}" | sha256sum | cut -c1-12)}"
COLL_DIR="${BUILD_DIR}/ansible_collections/kvm/snapshots"
RESULTS_DIR="${REPO_ROOT}/tests/output"
LOG_DIR="${RESULTS_DIR}/logs"
VERBOSITY="${VERBOSITY:-0}"

export PATH="${VENV}/bin:${PATH}"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
SUMMARY=()

log() { printf '=== %s\n' "$*"; }

verbosity_flag() {
    if [ "${VERBOSITY}" -gt 0 ] 2>/dev/null; then
        printf -- '-%s' "$(printf 'v%.0s' $(seq 1 "${VERBOSITY}"))"
    fi
}

# ---------------------------------------------------------------- build tree

list_collection_files() {
    # NUL-separated relative paths of the collection's files.
    if git -C "${REPO_ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "${REPO_ROOT}" ls-files -z --cached --others --exclude-standard
    else
        (cd "${REPO_ROOT}" && find . \( -path ./.git -o -path ./.venv -o -path ./build \
            -o -path ./tests/output -o -name __pycache__ \) -prune -o \( -type f -o -type l \) -print0 |
            sed -z 's|^\./||')
    fi
}

build_tree() {
    log "build tree: ${COLL_DIR}"
    rm -rf "${COLL_DIR}"
    mkdir -p "${COLL_DIR}"
    (
        cd "${REPO_ROOT}" || exit 1
        list_collection_files |
            while IFS= read -r -d '' path; do
                case "${path}" in
                    .venv/*|build/*|tests/output/*|.git/*) continue ;;
                esac
                # skip files deleted in the work tree but still in the index
                if [ -e "${path}" ] || [ -L "${path}" ]; then
                    printf '%s\0' "${path}"
                fi
            done |
            tar --null --no-recursion -T - -cf - | tar -xf - -C "${COLL_DIR}"
    ) || { echo "ERROR: could not copy the collection into ${COLL_DIR}" >&2; return 1; }
}

# ------------------------------------------------------------------ counting

count_junit() {
    # Print "passed failed skipped" counted over the junit XML files given.
    python - "$@" <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        failed += 1
        continue
    for case in root.iter('testcase'):
        if case.find('failure') is not None or case.find('error') is not None:
            failed += 1
        elif case.find('skipped') is not None:
            skipped += 1
        else:
            passed += 1
print(passed, failed, skipped)
PY
}

record() {
    # record STAGE RC PASSED FAILED SKIPPED SECONDS
    local stage="$1" rc="$2" passed="$3" failed="$4" skipped="$5" secs="$6"
    if [ "${rc}" -ne 0 ] && [ "${failed}" -eq 0 ]; then
        # the stage failed outside any counted case (setup error, crash...)
        failed=1
    fi
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
    SUMMARY+=("$(printf '%-12s %4d passed %4d failed %4d skipped  rc=%-3d %5ds' \
        "${stage}" "${passed}" "${failed}" "${skipped}" "${rc}" "${secs}")")
}

run_logged() {
    # run_logged LOGFILE CMD... : run in the build tree, tee output to LOGFILE
    local logfile="$1"; shift
    printf '$ %s\n' "$*" | tee "${logfile}"
    (cd "${COLL_DIR}" && "$@") 2>&1 | tee -a "${logfile}"
    return "${PIPESTATUS[0]}"
}

collect_results() {
    mkdir -p "${RESULTS_DIR}"
    if [ -d "${COLL_DIR}/tests/output" ]; then
        cp -a "${COLL_DIR}/tests/output/." "${RESULTS_DIR}/" 2>/dev/null || true
    fi
}

# -------------------------------------------------------------------- stages

stage_sanity() {
    local start rc junit_dir args=() t
    start=${SECONDS}
    junit_dir="${COLL_DIR}/tests/output/junit"
    rm -rf "${junit_dir}"
    args=(sanity --local --python "${PYTHON_VERSION}" --junit --color no)
    for t in ${SANITY_TEST:-}; do args+=(--test "${t}"); done
    # shellcheck disable=SC2046
    run_logged "${LOG_DIR}/sanity.log" ansible-test "${args[@]}" $(verbosity_flag)
    rc=$?
    local counts=(0 0 0)
    if compgen -G "${junit_dir}/*sanity*.xml" >/dev/null; then
        read -r -a counts < <(count_junit "${junit_dir}"/*sanity*.xml)
    fi
    record sanity "${rc}" "${counts[0]}" "${counts[1]}" "${counts[2]}" $((SECONDS - start))
}

stage_units() {
    local start rc paths=()
    start=${SECONDS}
    if ! compgen -G "${COLL_DIR}/tests/unit/*" >/dev/null; then
        log "units: no tests/unit, skipped"
        record units 0 0 0 0 0
        return
    fi
    rm -rf "${COLL_DIR}/tests/output/junit"
    read -r -a paths <<<"${UNITS:-}"
    # shellcheck disable=SC2046
    run_logged "${LOG_DIR}/units.log" ansible-test units --local --python "${PYTHON_VERSION}" \
        --color no $(verbosity_flag) "${paths[@]}"
    rc=$?
    local counts=(0 0 0)
    if compgen -G "${COLL_DIR}/tests/output/junit/*units*.xml" >/dev/null; then
        read -r -a counts < <(count_junit "${COLL_DIR}"/tests/output/junit/*units*.xml)
    fi
    record units "${rc}" "${counts[0]}" "${counts[1]}" "${counts[2]}" $((SECONDS - start))
}

stage_integration() {
    local start rc targets=() logfile="${LOG_DIR}/integration.log"
    start=${SECONDS}
    read -r -a targets <<<"${TARGET:-}"
    # shellcheck disable=SC2046
    run_logged "${logfile}" ansible-test integration --local --python "${PYTHON_VERSION}" \
        --allow-destructive --continue-on-error --color no $(verbosity_flag) "${targets[@]}"
    rc=$?
    local ran failed
    ran=$(grep -cE '^Running .+ integration test (role|script)$' "${logfile}")
    failed=$(sed -nE 's/.*The ([0-9]+) integration test\(s\) listed below \(out of [0-9]+\) failed.*/\1/p' \
        "${logfile}" | tail -n 1)
    failed=${failed:-0}
    if [ "${ran}" -eq 0 ] && [ "${rc}" -eq 0 ]; then
        log "integration: no target ran"
    fi
    record integration "${rc}" $((ran - failed)) "${failed}" 0 $((SECONDS - start))
}

stage_lint() {
    # ansible-lint: roles/ and playbooks/ with .ansible-lint, integration
    # targets with tests/integration/.ansible-lint; one case per run.
    local start rc passed=0 failed=0 paths=() p
    start=${SECONDS}
    for p in roles playbooks; do
        [ -d "${COLL_DIR}/${p}" ] && paths+=("${p}")
    done
    if [ "${#paths[@]}" -gt 0 ]; then
        if run_logged "${LOG_DIR}/lint-content.log" env ANSIBLE_COLLECTIONS_PATH="${BUILD_DIR}" \
            ansible-lint --offline --nocolor -c .ansible-lint "${paths[@]}"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    fi
    if [ -d "${COLL_DIR}/tests/integration/targets" ]; then
        if run_logged "${LOG_DIR}/lint-tests.log" env ANSIBLE_COLLECTIONS_PATH="${BUILD_DIR}" \
            ansible-lint --offline --nocolor -c tests/integration/.ansible-lint tests/integration/targets; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    fi
    rc=0
    [ "${failed}" -eq 0 ] || rc=1
    record lint "${rc}" "${passed}" "${failed}" 0 $((SECONDS - start))
}

stage_package() {
    # The collection as users meet it: the galaxy tarball installed into a
    # fresh collections path runs the demo; docs, changelog and the AWX
    # execution environment definition are accepted by their own tools.
    local start passed=0 failed=0 work="${BUILD_DIR}/package"
    start=${SECONDS}
    rm -rf "${work}"
    mkdir -p "${work}/collections"
    package_step() {
        local name="$1"; shift
        if run_logged "${LOG_DIR}/package-${name}.log" "$@"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            log "package: ${name} failed (log: tests/output/logs/package-${name}.log)"
        fi
    }
    package_step build ansible-galaxy collection build --force --output-path "${work}"
    package_step install ansible-galaxy collection install --force -p "${work}/collections" \
        "${work}"/kvm-snapshots-*.tar.gz
    package_step demo env ANSIBLE_COLLECTIONS_PATH="${work}/collections" \
        ansible-playbook "${work}/collections/ansible_collections/kvm/snapshots/playbooks/demo.yml"
    package_step docs-lint env ANSIBLE_COLLECTIONS_PATH="${BUILD_DIR}" \
        antsibull-docs lint-collection-docs --plugin-docs .
    package_step changelog-lint antsibull-changelog lint
    # in the build tree's copy: a trial release that folds every fragment into CHANGELOG.rst
    package_step changelog-build bash -c 'antsibull-changelog release && grep -q vm_snapshot CHANGELOG.rst'
    package_step execution-environment ansible-builder create -f docs/execution-environment.yml \
        --context "${work}/ee" --output-filename Containerfile
    local rc=0
    [ "${failed}" -eq 0 ] || rc=1
    record package "${rc}" "${passed}" "${failed}" 0 $((SECONDS - start))
}

# ---------------------------------------------------------------------- main

main() {
    local stages=("$@") stage
    [ "${#stages[@]}" -gt 0 ] || stages=(sanity units integration)
    [ "${stages[*]}" != all ] || stages=(sanity units integration)

    command -v ansible-test >/dev/null || {
        echo "ERROR: ansible-test not found in ${VENV}; run tests/setup.sh (make setup)" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
    if ! build_tree; then
        echo "0 passed, 1 failed"
        exit 1
    fi
    [ "${stages[*]}" != build ] || exit 0
    mkdir -p "${LOG_DIR}"

    for stage in "${stages[@]}"; do
        case "${stage}" in
            sanity|units|integration|lint|package)
                log "stage ${stage}"
                "stage_${stage}"
                collect_results
                ;;
            *)
                echo "ERROR: unknown stage '${stage}'" >&2
                record "${stage}" 2 0 1 0 0
                ;;
        esac
    done

    echo
    log "summary (logs and junit in tests/output/)"
    printf '%s\n' "${SUMMARY[@]}"
    echo "${TOTAL_SKIPPED} skipped"
    echo "${TOTAL_PASSED} passed, ${TOTAL_FAILED} failed"
    [ "${TOTAL_FAILED}" -eq 0 ]
}

main "$@"
