#!/usr/bin/env bash
# Run the kvm.snapshots test stages with ansible-test from a build tree.
#
#   tests/run.sh [STAGE...]      STAGE: sanity units integration lint package oldest
#                                (default: sanity units integration)
#   tests/run.sh build           only copy the collection into the build tree
#   tests/run.sh counts          what the integration case tables hold (for the docs)
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
#   OLDEST_TARGET    the integration target(s) the "oldest" stage runs with the
#                    oldest supported ansible-core (.venv-oldest; default roles)
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
VENV_OLDEST="${REPO_ROOT}/.venv-oldest"
OLDEST_TARGET="${OLDEST_TARGET:-roles}"
# "" for the stages on the newest ansible-core; "-oldest" while stage_oldest
# runs units and integration again on the oldest (log names, summary lines)
STAGE_SUFFIX=""

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
        (cd "${REPO_ROOT}" && find . \( -path ./.git -o -path ./.venv -o -path ./.venv-oldest -o -path ./build \
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
                    .venv/*|.venv-oldest/*|build/*|tests/output/*|.git/*) continue ;;
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

# Unit test skips that do not fail the units stage: an extended regex matched
# against pytest's skip message, each with the reason it is acceptable. Keep it
# short: a skip is a test that did not run, and on the host tests/setup.sh
# prepares every unit test can run. Deliberately absent: "needs zstd and GNU
# tar" (setup.sh installs both; a skip there means a broken host) and the
# importorskip of libvirt/lxml (checked up front, see stage_units).
UNIT_SKIP_ALLOW=(
)

# Sanity tests that may report "skipped" without failing the sanity stage: an
# extended regex matched against the test's name (ansible-test appends
# -python-X.Y to some), each with why. Any other skip fails the stage.
SANITY_SKIP_ALLOW=(
    # the collection has no PowerShell module or module_util
    '^pslint(-python-[0-9.]+)?$'
    # no __init__.py under plugins/ (a collection needs none), so nothing to check
    '^empty-init(-python-[0-9.]+)?$'
)
# With SANITY_TEST unset, these must each have a junit result (ansible-test
# could otherwise drop one, e.g. on a missing requirement, and the stage pass).
SANITY_REQUIRED=(pep8 pylint validate-modules yamllint ansible-doc compile import)

harness_py() {
    # harness_py COMMAND ARG...: the stages' bookkeeping, in Python (the venv's).
    #   junit FILE...                          "passed failed skipped" of junit files
    #   targets TARGETS_DIR [WORD...]          the integration targets a run must report
    #   integration LOG DATA JUNIT TARGET...   judge an integration run, target by target
    #   units ROOT JUNIT_DIR PATH...           judge a units run (UNIT_SKIP_ALLOW in env)
    #   sanity JUNIT_DIR TEST...               judge a sanity run: every TEST has a
    #                                          result, skips only if SANITY_SKIP_ALLOW (env)
    # Each judge prints one line per problem and ends with "passed failed skipped".
    python - "$@" <<'PY'
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

HIDDEN = ('hidden', 'disabled', 'unsupported', 'unstable')


def say(msg):
    print(msg, file=sys.stderr)


def parse(path):
    """The junit file's root element, or None (said why) when it is not junit."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        say('unparsable junit output %s: %s' % (path, exc))
        return None
    if root.tag not in ('testsuites', 'testsuite'):
        say('not junit output %s: root element <%s>' % (path, root.tag))
        return None
    return root


def outcome(case):
    if case.find('failure') is not None or case.find('error') is not None:
        return 'failed'
    if case.find('skipped') is not None:
        return 'skipped'
    return 'passed'


def cmd_junit(paths):
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    if not paths:
        say('no junit output')
        counts['failed'] += 1
    for path in paths:
        root = parse(path)
        if root is None:
            counts['failed'] += 1
            continue
        for case in root.iter('testcase'):
            counts[outcome(case)] += 1
    print(counts['passed'], counts['failed'], counts['skipped'])


def aliases(target_dir):
    try:
        with open(os.path.join(target_dir, 'aliases')) as f:
            lines = [line.split('#', 1)[0].strip() for line in f]
    except FileNotFoundError:
        return []
    return [line for line in lines if line]


def runnable(targets_dir, name):
    """Why ansible-test would not run this target by default, or None when it would."""
    path = os.path.join(targets_dir, name)
    if name.startswith(('setup_', 'prepare_')):
        return 'a setup_/prepare_ helper'
    if not (os.path.isfile(os.path.join(path, 'runme.sh'))
            or glob.glob(os.path.join(path, 'tasks', 'main.y*ml'))):
        return 'neither runme.sh nor tasks/main.yml'
    marked = [a for a in aliases(path) if a.split('/')[0] in HIDDEN]
    if marked:
        return 'marked %s' % marked[0]
    return None


def cmd_targets(targets_dir, words):
    names = sorted(n for n in os.listdir(targets_dir)
                   if not n.startswith('.') and os.path.isdir(os.path.join(targets_dir, n)))
    tests = [n for n in names if runnable(targets_dir, n) is None]
    if not words:
        selected = tests
    else:
        selected = set()
        for word in words:
            if word in names:
                why = runnable(targets_dir, word)
                if why:
                    say('TARGET %s: not a test target (%s); pick one of: %s' % (word, why, ' '.join(tests)))
                    sys.exit(2)
                hits = [word]
            elif word.endswith('/'):
                hits = [n for n in tests if any((a + '/').startswith(word)
                                                for a in aliases(os.path.join(targets_dir, n)))]
            else:
                try:
                    pattern = re.compile('^%s$' % word)
                except re.error:
                    pattern = re.compile('^%s$' % re.escape(word))
                hits = [n for n in tests if pattern.match(n)]
            if not hits:
                say('TARGET %s: matches no integration target; pick one of: %s' % (word, ' '.join(tests)))
                sys.exit(2)
            selected.update(hits)
    if not selected:
        say('no integration target under %s' % targets_dir)
        sys.exit(2)
    print('\n'.join(sorted(selected)))


def cmd_integration(log, data_dir, junit_dir, expected):
    with open(log, errors='replace') as f:
        lines = f.read().splitlines()
    started = set()
    listed = set()
    for i, line in enumerate(lines):
        m = re.match(r'^Running (\S+) integration test (role|script)$', line)
        if m:
            started.add(m.group(1))
        if re.search(r'The \d+ integration test\(s\) listed below \(out of \d+\) failed', line):
            listed = set()
            for name in lines[i + 1:]:
                if not re.match(r'^[A-Za-z0-9_.-]+$', name):
                    break
                listed.add(name)
    passed_by_test = set()
    for path in glob.glob(os.path.join(data_dir, 'integration-*.json')):
        try:
            with open(path) as f:
                passed_by_test.update(json.load(f)['targets'])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            say('unparsable ansible-test result %s: %s' % (path, exc))
    passed = failed = 0
    for name in sorted(set(expected) | started | passed_by_test | listed):
        if name in listed:
            why = 'failed'
        elif name in passed_by_test:
            files = [p for p in glob.glob(os.path.join(junit_dir, name + '-*.xml'))
                     if re.match(r'^%s-[^-]+-[0-9.]+\.xml$' % re.escape(name), os.path.basename(p))]
            roots = [parse(p) for p in files]
            if not files:
                why = 'passed, but wrote no junit output'
            elif any(r is None for r in roots) or not any(r.find('.//testcase') is not None for r in roots):
                why = 'passed, but its junit output is unparsable or empty'
            else:
                why = None
        elif name in started:
            why = 'started and never finished (killed or interrupted)'
        else:
            why = 'did not run (skipped by ansible-test?), yet the tree has it'
        if why:
            failed += 1
            say('integration target %s: %s' % (name, why))
        else:
            passed += 1
    print(passed, failed, 0)


def allow_list(variable):
    """The regular expressions of an allow-list of skips, one a line in an environment variable."""
    return [re.compile(p) for p in os.environ.get(variable, '').split('\n') if p]


def stage_cases(junit_dir, stage, counts):
    """Every test case in a stage's junit files; no file, or one that does not parse, counts as failed."""
    files = sorted(glob.glob(os.path.join(junit_dir, '*%s*.xml' % stage)))
    if not files:
        say('%s: no junit output in %s' % (stage, junit_dir))
        counts['failed'] += 1
    for path in files:
        tree = parse(path)
        if tree is None:
            counts['failed'] += 1
            continue
        yield from tree.iter('testcase')


def cmd_units(root, junit_dir, paths):
    allow = allow_list('UNIT_SKIP_ALLOW')
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    ran = set()
    for case in stage_cases(junit_dir, 'units', counts):
        result = outcome(case)
        ran.add(case.get('file') or (case.get('classname') or '').replace('.', '/') + '.py')
        if result == 'skipped':
            skip = case.find('skipped')
            # a module-level importorskip says "collection skipped" and puts the reason in the text
            msg = ' '.join(x.strip() for x in (skip.get('message'), skip.text) if x and x.strip())
            if not any(p.search(msg) for p in allow):
                where = '::'.join(x for x in (case.get('classname'), case.get('name')) if x)
                say('units: unexpected skip of %s: %s' % (where, msg))
                result = 'failed'
        counts[result] += 1
    wanted = set()
    for path in paths or ['tests/unit']:
        full = os.path.join(root, path)
        if os.path.isdir(full):
            for dirpath, _dirs, names in os.walk(full):
                wanted.update(os.path.relpath(os.path.join(dirpath, n), root)
                              for n in names if re.match(r'^test_.*\.py$', n))
        elif re.match(r'^test_.*\.py$', os.path.basename(path)):
            wanted.add(os.path.normpath(path))
    for path in sorted(wanted - ran):
        say('units: no test case of %s ran' % path)
        counts['failed'] += 1
    if not any(counts.values()):  # no file counts as failed already: here the files hold no case
        say('units: the junit output holds no test case')
        counts['failed'] += 1
    print(counts['passed'], counts['failed'], counts['skipped'])


def cmd_sanity(junit_dir, required):
    allow = allow_list('SANITY_SKIP_ALLOW')
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    ran = set()
    for case in stage_cases(junit_dir, 'sanity', counts):
        name = case.get('name') or ''
        ran.add(re.sub(r'-python-[0-9.]+$', '', name))
        result = outcome(case)
        if result == 'skipped' and not any(p.search(name) for p in allow):
            skip = case.find('skipped')
            say('sanity: unexpected skip of %s: %s' % (name, (skip.text or skip.get('message') or '').strip()))
            result = 'failed'
        counts[result] += 1
    for name in required:
        if name not in ran:
            say('sanity: %s wrote no junit result' % name)
            counts['failed'] += 1
    print(counts['passed'], counts['failed'], counts['skipped'])


def cmd_counts(root):
    """What the integration case tables hold, counted the way the docs state it."""
    import runpy
    import yaml

    def tables(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'rel_cases' and isinstance(value, list):
                    yield value
                else:
                    yield from tables(value)
        elif isinstance(node, list):
            for item in node:
                yield from tables(item)

    targets = os.path.join(root, 'tests', 'integration', 'targets')
    # The damaged and hostile backups: one table in the shared crafter, one case per run.
    crafter = os.path.join(targets, 'setup_vm', 'files', 'hostile_backups.py')
    crafted = runpy.run_path(crafter, run_name='counts')
    every_run = crafted['table']()[0]
    plain_runs = [r for r in every_run if not next(c for c in crafted['CASES'] if c['name'] == r['case'])['needs']]
    print('setup_vm/files/hostile_backups.py: %d damaged or hostile backups, %d runs (%d refused, %d accepted); '
          'reliability/backup_inputs.yml tries every run, vm_backup/damaged.yml the %d that need only a backup'
          % (len(crafted['CASES']), len(every_run), sum(1 for r in every_run if r['expect'] == 'failed'),
             sum(1 for r in every_run if r['expect'] != 'failed'), len(plain_runs)))
    total = {'refused': 0, 'refused_check': 0, 'accepted': 0}
    for path in sorted(glob.glob(os.path.join(targets, 'reliability', 'tasks', '*.yml'))):
        with open(path) as f:
            text = f.read()
        cases = [c for table in tables(yaml.safe_load(text)) for c in table]
        if os.path.basename(crafter) in text:
            cases += every_run
        if not cases:
            continue
        refused = [c for c in cases if c.get('expect', 'failed') == 'failed']
        counts = {'refused': len(refused), 'refused_check': sum(1 for c in refused if c.get('check')),
                  'accepted': len(cases) - len(refused)}
        print('reliability/%s: %d cases: %d refused inputs (%d in check mode), %d accepted inputs (expect ok/changed)'
              % (os.path.basename(path), len(cases), counts['refused'], counts['refused_check'], counts['accepted']))
        for key, value in counts.items():
            total[key] += value
    print('reliability case tables: %d cases: %d refused inputs (%d in check mode), %d accepted inputs'
          % (sum(total[k] for k in ('refused', 'accepted')), total['refused'], total['refused_check'],
             total['accepted']))
    faults = []
    for path in sorted(glob.glob(os.path.join(targets, '*', 'tasks', '*.yml'))):
        with open(path) as f:
            tasks = yaml.safe_load(f)
            for task in tasks if isinstance(tasks, list) else []:
                command = (task or {}).get('ansible.builtin.command')
                argv = command.get('argv') or [] if isinstance(command, dict) else []
                if any('files/fault.py' in str(a) for a in argv):
                    faults.append('%s (%s)' % (argv[2], os.path.relpath(path, targets).replace('/tasks/', '/')))
    print('faults injected through setup_vm/files/fault.py: %d: %s' % (len(faults), ', '.join(faults)))
    with open(os.path.join(targets, 'vm_snapshot', 'tasks', 'refused.yml')) as f:
        loops = [t for t in yaml.safe_load(f) if isinstance(t.get('loop'), list)
                 and all(isinstance(i, dict) and 'expect' in i for i in t['loop'])]
    print('vm_snapshot/refused.yml: %d refused inputs, %d of them again in check mode'
          % (sum(len(t['loop']) for t in loops if not t.get('check_mode')),
             sum(len(t['loop']) for t in loops if t.get('check_mode'))))


command, args = sys.argv[1], sys.argv[2:]
if command == 'counts':
    cmd_counts(args[0])
elif command == 'junit':
    cmd_junit(args)
elif command == 'targets':
    cmd_targets(args[0], args[1:])
elif command == 'integration':
    cmd_integration(args[0], args[1], args[2], args[3:])
elif command == 'units':
    cmd_units(args[0], args[1], args[2:])
elif command == 'sanity':
    cmd_sanity(args[0], args[1:])
else:
    sys.exit('harness_py: unknown command %s' % command)
PY
}

judge() {
    # judge LOGFILE ARG...: harness_py ARG...; its findings go to stderr and
    # LOGFILE, its counts to stdout
    local logfile="$1" findings
    shift
    findings="$(mktemp)"
    harness_py "$@" 2>"${findings}"
    sed 's/^/=== FAIL: /' "${findings}" | tee -a "${logfile}" >&2
    rm -f "${findings}"
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
    SUMMARY+=("$(printf '%-18s %4d passed %4d failed %4d skipped  rc=%-3d %5ds' \
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
    # every sanity test asked for (or, with none asked, each core one) must
    # have a junit result (ansible-test-sanity-NAME[-pythonX].xml); a skip
    # fails unless SANITY_SKIP_ALLOW names it
    local counts=(0 0 0) required=()
    read -r -a required <<<"${SANITY_TEST:-${SANITY_REQUIRED[*]}}"
    read -r -a counts <<<"$(SANITY_SKIP_ALLOW="$(printf '%s\n' "${SANITY_SKIP_ALLOW[@]}")" \
        judge "${LOG_DIR}/sanity.log" sanity "${junit_dir}" "${required[@]}")"
    record sanity "${rc}" "${counts[0]}" "${counts[1]}" "${counts[2]}" $((SECONDS - start))
}

stage_units() {
    # Fails on a missing or unparsable junit file, on a skip whose reason is
    # not in UNIT_SKIP_ALLOW, and on a selected test file with no case run.
    local start rc paths=() err junit_dir="${COLL_DIR}/tests/output/junit"
    start=${SECONDS}
    # Without libvirt-python most unit tests skip themselves (importorskip):
    # the interpreter ansible-test runs must have the bindings.
    if ! err=$("python${PYTHON_VERSION}" -c 'import libvirt, lxml.etree' 2>&1); then
        log "units: python${PYTHON_VERSION} ($(command -v "python${PYTHON_VERSION}")) cannot import libvirt and lxml: ${err##*$'\n'}; run tests/setup.sh (make setup)"
        record "units${STAGE_SUFFIX}" 1 0 1 0 $((SECONDS - start))
        return
    fi
    rm -rf "${junit_dir}"
    read -r -a paths <<<"${UNITS:-}"
    # shellcheck disable=SC2046
    run_logged "${LOG_DIR}/units${STAGE_SUFFIX}.log" ansible-test units --local --python "${PYTHON_VERSION}" \
        --color no $(verbosity_flag) "${paths[@]}"
    rc=$?
    local counts=(0 0 0)
    read -r -a counts <<<"$(UNIT_SKIP_ALLOW="$(printf '%s\n' "${UNIT_SKIP_ALLOW[@]}")" \
        judge "${LOG_DIR}/units${STAGE_SUFFIX}.log" units "${COLL_DIR}" "${junit_dir}" "${paths[@]}")"
    record "units${STAGE_SUFFIX}" "${rc}" "${counts[0]}" "${counts[1]}" "${counts[2]}" $((SECONDS - start))
}

stage_integration() {
    # Every target the tree holds (or TARGET selects) must report a result:
    # one that was skipped, killed or wrote no junit output counts as failed,
    # each target once.
    local start rc targets=() expected=() logfile="${LOG_DIR}/integration${STAGE_SUFFIX}.log"
    local out_dir="${COLL_DIR}/tests/output"
    start=${SECONDS}
    read -r -a targets <<<"${TARGET:-}"
    # harness_py prints nothing but its complaint when TARGET selects no test target
    mapfile -t expected < <(harness_py targets "${COLL_DIR}/tests/integration/targets" "${targets[@]}")
    if [ "${#expected[@]}" -eq 0 ]; then
        record "integration${STAGE_SUFFIX}" 2 0 1 0 $((SECONDS - start))
        return
    fi
    log "integration: expecting a result from ${#expected[@]} target(s): ${expected[*]}"
    rm -rf "${out_dir}/junit" "${out_dir}/data"
    # shellcheck disable=SC2046
    run_logged "${logfile}" ansible-test integration --local --python "${PYTHON_VERSION}" \
        --allow-destructive --continue-on-error --color no $(verbosity_flag) "${targets[@]}"
    rc=$?
    local counts=(0 0 0)
    read -r -a counts <<<"$(judge "${logfile}" integration "${logfile}" "${out_dir}/data" \
        "${out_dir}/junit" "${expected[@]}")"
    record "integration${STAGE_SUFFIX}" "${rc}" "${counts[0]}" "${counts[1]}" 0 $((SECONDS - start))
}

stage_oldest() {
    # The oldest ansible-core meta/runtime.yml allows (tests/requirements-oldest.txt,
    # installed by tests/setup.sh into .venv-oldest): every unit test and
    # OLDEST_TARGET, in a build tree of their own, judged as units and
    # integration are (a stage that runs no case fails). The other stages run
    # on the newest (.venv).
    local start=${SECONDS} want have
    local old_coll="${BUILD_DIR}-oldest/ansible_collections/kvm/snapshots"
    want="$(sed -n 's/^ansible-core==\([0-9.]*\)$/\1/p' "${REPO_ROOT}/tests/requirements-oldest.txt")"
    have="$("${VENV_OLDEST}/bin/python" -c 'from ansible.release import __version__; print(__version__)' 2>/dev/null)"
    if [ -z "${want}" ] || [ "${have}" != "${want}" ]; then
        log "oldest: .venv-oldest has ansible-core '${have:-none}', tests/requirements-oldest.txt pins '${want:-nothing}'; run tests/setup.sh (make setup)"
        record oldest 1 0 1 0 $((SECONDS - start))
        return
    fi
    rm -rf "${old_coll}"
    mkdir -p "${old_coll}"
    (cd "${COLL_DIR}" && tar --exclude=./tests/output -cf - .) | tar -xf - -C "${old_coll}" || {
        record oldest 1 0 1 0 $((SECONDS - start))
        return
    }
    log "oldest: ansible-core ${have} from .venv-oldest, build tree ${old_coll}"
    local saved_coll="${COLL_DIR}" saved_path="${PATH}" saved_units="${UNITS:-}" saved_target="${TARGET:-}"
    COLL_DIR="${old_coll}" PATH="${VENV_OLDEST}/bin:${PATH}" STAGE_SUFFIX="-oldest"
    UNITS="" TARGET="${OLDEST_TARGET}"
    stage_units
    stage_integration
    mkdir -p "${RESULTS_DIR}/oldest"
    cp -a "${COLL_DIR}/tests/output/." "${RESULTS_DIR}/oldest/" 2>/dev/null || true
    COLL_DIR="${saved_coll}" PATH="${saved_path}" STAGE_SUFFIX="" UNITS="${saved_units}" TARGET="${saved_target}"
}

stage_lint() {
    # Two cases. ansible-lint as a contributor or the galaxy importer runs it:
    # once, from the collection's root, with its own .ansible-lint (production
    # profile, offline), over everything, tests included; the collection is
    # found on ANSIBLE_COLLECTIONS_PATH (offline, ansible-lint installs
    # nothing). It fails when ansible-lint reports any failure or warning, or
    # lints no file. Then the examples users paste (lint_examples).
    local start rc summary files logfile="${LOG_DIR}/lint.log" passed=0 failed=0
    start=${SECONDS}
    run_logged "${logfile}" env ANSIBLE_COLLECTIONS_PATH="${BUILD_DIR}" ansible-lint
    rc=$?
    # "Passed: 0 failure(s), 0 warning(s) in 199 files processed of 234 encountered. ..."
    summary=$(grep -E '^(Passed|Failed): [0-9]+ failure\(s\), [0-9]+ warning\(s\) in [0-9]+ files processed' \
        "${logfile}" | tail -n 1)
    files=$(sed -nE 's/.* in ([0-9]+) files processed.*/\1/p' <<<"${summary}")
    if [ "${rc}" -ne 0 ]; then
        log "lint: ansible-lint exited ${rc} (log: tests/output/logs/lint.log)"
    elif [[ ! "${summary}" =~ ^Passed:\ 0\ failure\(s\),\ 0\ warning\(s\) ]]; then
        log "lint: ansible-lint reported findings or no summary: ${summary:-none}"
        rc=1
    elif [ "${files:-0}" -eq 0 ]; then
        log "lint: ansible-lint linted no file"
        rc=1
    fi
    log "lint: ansible-lint linted ${files:-0} file(s) from the collection root"
    if [ "${rc}" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    if lint_examples; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    rc=0
    [ "${failed}" -eq 0 ] || rc=1
    record lint "${rc}" "${passed}" "${failed}" 0 $((SECONDS - start))
}

lint_examples() {
    # The examples users paste: every playbook and task list in a yaml code
    # block of README.md and docs/*.md (tests/extract_examples.py), linted with
    # the config the extractor writes. Fails when the extractor finds nothing
    # or a block that does not parse.
    local ex_dir="${BUILD_DIR}/examples" ex_log="${LOG_DIR}/lint-examples.log" docs=() p ok=0
    rm -rf "${ex_dir}"
    for p in README.md docs/*.md; do
        [ -f "${COLL_DIR}/${p}" ] && docs+=("${p}")
    done
    {
        (cd "${COLL_DIR}" && python tests/extract_examples.py "${ex_dir}" "${docs[@]}") &&
            printf '$ (in %s) ansible-lint playbooks\n' "${ex_dir}" &&
            (cd "${ex_dir}" && ANSIBLE_COLLECTIONS_PATH="${BUILD_DIR}" \
                ansible-lint --offline --nocolor -c .ansible-lint playbooks)
    } > "${ex_log}" 2>&1 || ok=1
    log "lint: $(grep -m1 '^examples: ' "${ex_log}" || echo 'examples: extraction failed') (log: tests/output/logs/lint-examples.log)"
    return "${ok}"
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
    if [ "${stages[*]}" = counts ]; then
        harness_py counts "${REPO_ROOT}"
        exit
    fi
    if [ "${stages[0]:-}" = harness ]; then
        # tests/run.sh harness COMMAND ARG...: one bookkeeping judge on files
        # of your choice (e.g. to check the judges themselves)
        SANITY_SKIP_ALLOW="$(printf '%s\n' "${SANITY_SKIP_ALLOW[@]}")" \
            UNIT_SKIP_ALLOW="$(printf '%s\n' "${UNIT_SKIP_ALLOW[@]}")" harness_py "${stages[@]:1}"
        exit
    fi

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
            sanity|units|integration|lint|package|oldest)
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
