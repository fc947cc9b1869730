# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's one door to libvirt.

Private to kvm.snapshots (leading underscore): no stable API for other collections.

It opens connections, finds domains by name, UUID or glob, runs work for many
domains in parallel, and turns every ``libvirtError`` into a ``KvmError`` whose
text is one line a sysadmin can act on. Modules call ``run_module`` and never
see a traceback.
"""

from __future__ import annotations

import fnmatch
import re
import signal
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback, missing_required_lib
from ansible.module_utils.common.respawn import has_respawned, probe_interpreters_for_module, respawn_module

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()

LXML_IMPORT_ERROR = None
try:
    from lxml import etree
except ImportError:
    etree = None
    LXML_IMPORT_ERROR = traceback.format_exc()

# Where distributions put a Python that has python3-libvirt / python3-lxml.
SYSTEM_PYTHONS = ['/usr/bin/python3', '/usr/libexec/platform-python', '/usr/bin/python']

CONNECTION_ARGSPEC = dict(
    uri=dict(type='str', default='qemu:///system', fallback=(env_fallback, ['LIBVIRT_DEFAULT_URI'])),
)

# Largest number of domains worked on at once; libvirt serialises per domain anyway.
MAX_WORKERS = 16


class KvmError(Exception):
    """An error with a one-line message meant for the user, plus optional result fields."""

    def __init__(self, msg, **result):
        super().__init__(one_line(msg))
        self.result = result


class InvalidInput(KvmError):
    """The task's options cannot work; nothing was touched."""


class ConnectionFailed(KvmError):
    """The hypervisor could not be reached or refused us."""


class DomainNotFound(KvmError):
    """No domain has that name or UUID."""


class SnapshotNotFound(KvmError):
    """The domain has no snapshot of that name."""


class OperationFailed(KvmError):
    """libvirt (or a tool) refused or failed the operation."""


def one_line(text):
    """Collapse white space so a message never spans lines."""
    return ' '.join(str(text).split())


def ensure_libraries(module):
    """Make sure ``libvirt`` and ``lxml`` import, re-spawning under the system Python if needed.

    Many hosts have the distribution packages (python3-libvirt, python3-lxml) but
    run modules under another interpreter; libvirt-python is hard to pip install
    there (it needs a compiler and libvirt headers), so we move to where it is.
    """
    if LIBVIRT_IMPORT_ERROR is None and LXML_IMPORT_ERROR is None:
        libvirt.registerErrorHandler(_quiet, None)
        return
    if not has_respawned():
        interpreter = probe_interpreters_for_module(SYSTEM_PYTHONS, 'libvirt')
        if interpreter:
            respawn_module(interpreter)  # does not return
    if LIBVIRT_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib('libvirt-python (or the python3-libvirt package)'),
                         exception=LIBVIRT_IMPORT_ERROR)
    module.fail_json(msg=missing_required_lib('lxml (or the python3-lxml package)'), exception=LXML_IMPORT_ERROR)


def _quiet(_ctx, _err):
    """libvirt prints every error to stderr by default; we report them ourselves."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so every ``finally`` and rollback runs.

    Code that undoes something on the way out appends what it did to ``done``
    (one short sentence each), and may add result fields to ``result``.
    """

    def __init__(self, signame):
        super().__init__(signame)
        self.signame = signame
        self.done = []
        self.result = {}


# systemd stop and host shutdown send SIGTERM, AWX cancelling a job SIGTERM (or SIGINT), a lost terminal SIGHUP.
STOP_SIGNALS = ('SIGTERM', 'SIGHUP', 'SIGINT')


def _interrupt(signum, _frame):
    # Once only: a second signal must not cut short the cleanup the first one started.
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def note_undone(exc, text):
    """Record on an interruption what the code did on its way out (no-op for other exceptions)."""
    if isinstance(exc, KeyboardInterrupt):
        if not hasattr(exc, 'done'):
            exc.done = []   # a KeyboardInterrupt raised without our handler
        exc.done.append(text)


def interrupted_error(exc):
    """The one-line failure for an interruption, with what was done about it."""
    signame = exc.signame if isinstance(exc, Interrupted) else 'SIGINT'
    done = list(getattr(exc, 'done', []))
    text = 'interrupted by %s' % signame
    # The signal is taken only once a blocking libvirt call has returned: that call may have done its work.
    text += (': ' + '; '.join(done)) if done else ': the operation under way may have completed; nothing needed undoing'
    result = dict(getattr(exc, 'result', {}))
    result['interrupted'] = dict(signal=signame, done=done)
    return KvmError(text, **result)


def run_module(module, work):
    """Run ``work()`` and exit the module with its result dict, or one clean ``fail_json``.

    SIGTERM and SIGHUP raise ``Interrupted`` (a ``KeyboardInterrupt``), so a stopped
    job rolls back exactly as Ctrl-C does and still answers with one line.
    """
    ensure_libraries(module)
    try:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), _interrupt)
        result = work()
    except KvmError as exc:
        result = exc
    except libvirt.libvirtError as exc:
        result = translate(exc)
    except KeyboardInterrupt as exc:
        result = interrupted_error(exc)
    # Outside the except block, so Ansible attaches no traceback to a user error.
    fields = result.result if isinstance(result, KvmError) else result
    for warning in fields.pop('warnings', []):
        module.warn(warning)    # ansible-core 2.19 deprecates passing them to exit_json
    if isinstance(result, KvmError):
        module.fail_json(msg=str(result), **fields)
    module.exit_json(**fields)


def translate(exc, what=None, connecting=False):
    """Turn a ``libvirtError`` into the matching ``KvmError`` with advice where we have some.

    ``connecting``: the error came from opening the connection. Otherwise an RPC
    error means an open connection broke (the daemon stopped or restarted in the
    middle), so what the call was doing may or may not have happened.
    """
    code = exc.get_error_code()
    text = one_line(exc.get_error_message() or exc)
    prefix = '%s: ' % what if what else ''
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(prefix + text)
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotNotFound(prefix + text)
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_OPERATION_DENIED) \
            or 'Permission denied' in text:
        return ConnectionFailed(prefix + text + ' - permission denied: run the task as root (become: true) '
                                'or as a user in the libvirt group')
    if not connecting and exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return ConnectionFailed(prefix + 'the connection to libvirt broke in the middle of the task (' + text + '), '
                                'so what it was doing may or may not have happened: once the daemon answers again '
                                "('virsh version'), check, or run the task again")
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC or code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT):
        return ConnectionFailed(prefix + text + ' - is the libvirt daemon (libvirtd or virtqemud) running '
                                'and the URI right?')
    return OperationFailed(prefix + text)


# Host parts that name this machine itself (without a port: localhost:2222 is usually a tunnel elsewhere).
LOOPBACK_HOSTS = ('localhost', '127.0.0.1', '::1')


def remote_uri_problem(uri):
    """Why ``uri`` may not name this machine's own hypervisor, or None when it does (no connection needed).

    Local: no host part (``qemu:///system``, ``qemu:///session``, ``qemu+unix:///system``,
    ``qemu+ssh:///system``, ``test:///default``), or ``localhost``, ``127.0.0.1``, ``[::1]``
    without a port. Anything else may be another machine: a host name or address, a
    port, the ``ext`` transport (it runs any command), an alias or an empty URI (libvirt
    resolves those from its own configuration).
    """
    if not uri or '://' not in uri:
        return "%s is not a full URI: an alias or an empty URI may name another host" % (repr(uri) if uri else 'an empty uri')
    scheme = uri.split('://', 1)[0]
    if scheme.partition('+')[2] == 'ext':
        return '%s uses the ext transport, which runs a command that may reach any host' % uri
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        return '%s has a host part that cannot be read' % uri
    if not host or (host in LOOPBACK_HOSTS and port is None):
        return None
    return '%s names the host %s' % (uri, parts.netloc.rpartition('@')[2])


def is_local_uri(uri):
    """``uri`` names the hypervisor of the machine this code runs on (see ``remote_uri_problem``)."""
    return remote_uri_problem(uri) is None


def connect(uri):
    """Open a read-write connection to ``uri``; raise ``ConnectionFailed`` with advice."""
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ConnectionFailed('cannot connect to libvirt at %s: %s' % (uri, translate(exc, connecting=True))) from None


class Connection:
    """A context manager around one libvirt connection."""

    def __init__(self, uri):
        self.uri = uri
        self.conn = None

    def __enter__(self):
        self.conn = connect(self.uri)
        return self.conn

    def __exit__(self, *exc_info):
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass  # closing a broken connection has nothing left to tell


def looks_like_uuid(text):
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) in (32, 36)


def not_found_text(ident, uri):
    return "domain '%s' not found on %s: check the name with 'virsh list --all'" % (ident, uri)


def lookup_domain(conn, ident):
    """Find a domain by name or UUID; raise ``DomainNotFound`` naming the way out."""
    try:
        if looks_like_uuid(ident):
            try:
                return conn.lookupByUUIDString(ident)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return conn.lookupByName(ident)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(not_found_text(ident, conn.getURI())) from None
        raise translate(exc, "domain '%s'" % ident) from None


def find_domain(conn, name=None, uuid=None):
    """The domain named ``name`` (or with ``uuid``), or None when there is none."""
    try:
        return conn.lookupByName(name) if name is not None else conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise translate(exc, "domain '%s'" % name if name is not None else 'domain uuid %s' % uuid) from None


def is_glob(pattern):
    return re.search(r'[*?\[]', pattern) is not None


def resolve_domains(conn, patterns):
    """Expand names, UUIDs and globs into ``(found, missing)``.

    ``found`` is a list of ``(label, domain)`` in the order the patterns name them,
    without repeats; ``missing`` lists the plain names or UUIDs that matched no domain.
    A glob that matches nothing is not an error (as with a shell glob in a loop).
    """
    found, missing, seen = [], [], set()
    everything = None
    for pattern in patterns:
        if is_glob(pattern):
            if everything is None:
                everything = [dom for _name, dom in all_domains(conn)]
            matches = [dom for dom in everything if fnmatch.fnmatchcase(dom.name(), pattern)]
        else:
            try:
                matches = [lookup_domain(conn, pattern)]
            except DomainNotFound:
                missing.append(pattern)
                continue
        for dom in matches:
            if dom.UUIDString() not in seen:
                seen.add(dom.UUIDString())
                found.append((dom.name(), dom))
    return found, missing


def all_domains(conn):
    return [(dom.name(), dom) for dom in sorted(conn.listAllDomains(0), key=lambda dom: dom.name())]


def for_each(items, work, workers=MAX_WORKERS):
    """Run ``work(label, item)`` for each ``(label, item)`` in parallel.

    Returns ``[(label, result_or_None, error_or_None)]`` in input order: one
    failing item never hides the others' outcome.
    """
    started = set()

    def guarded(pair):
        label, item = pair
        started.add(label)
        try:
            return label, work(label, item), None
        except KvmError as exc:
            return label, None, exc
        except libvirt.libvirtError as exc:
            return label, None, translate(exc, "domain '%s'" % label)

    if len(items) <= 1:
        return [guarded(pair) for pair in items]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)))
    futures = []
    try:
        futures.extend(pool.submit(guarded, pair) for pair in items)
        return [future.result() for future in futures]
    except KeyboardInterrupt as exc:
        # SIGTERM/SIGHUP/Ctrl-C: touch no further domain; those under way finish their call first.
        # One by one rather than shutdown(cancel_futures=True), which needs Python 3.9.
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        skipped = [label for label, _item in items if label not in started]
        if skipped:
            note_undone(exc, 'the %d domain(s) still queued were not touched: %s' % (len(skipped), ', '.join(skipped)))
        finished = [future for future in futures if future.done() and not future.cancelled()]
        _note_finished(exc, [future.result() for future in finished if future.exception() is None])
        raise
    finally:
        pool.shutdown(wait=True)


def _note_finished(exc, outcomes):
    """Put the outcome of the domains a bulk run finished before its interruption into the failure."""
    results = []
    for label, outcome, error in outcomes:
        if error is not None:
            results.append(dict(domain=label, changed=False, msg=str(error)))
        else:
            results.append({key: value for key, value in outcome.items() if key not in ('diff', 'warnings')})
    if not hasattr(exc, 'result'):
        exc.result = {}     # a KeyboardInterrupt raised without our handler
    exc.result.update(results=results, changed=any(entry.get('changed') for entry in results))


DOMAIN_STATES = {
    0: 'nostate', 1: 'running', 2: 'blocked', 3: 'paused',
    4: 'shutdown', 5: 'shutoff', 6: 'crashed', 7: 'pmsuspended',
}


def domain_state(dom):
    """The domain's state as virsh names it (``running``, ``shutoff``, ``paused`` ...)."""
    return DOMAIN_STATES.get(dom.state()[0], 'unknown')


def parse_xml(text):
    """An lxml element from libvirt's XML text (str or bytes)."""
    return etree.fromstring(text.encode() if isinstance(text, str) else text)
