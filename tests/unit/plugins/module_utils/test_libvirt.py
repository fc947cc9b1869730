# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Connections, domain lookup, error translation and stop signals, on libvirt's test:///default driver.

Issue 16: SIGTERM and SIGHUP unwind like Ctrl-C, through every rollback, and the module
says what it undid. Real signals are sent to this process; the integration targets send
them to the real modules in the middle of their work.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (  # noqa: E402
    ConnectionFailed,
    DomainNotFound,
    KvmError,
    OperationFailed,
    connect,
    find_domain,
    for_each,
    lookup_domain,
    one_line,
    resolve_domains,
)

DOMAIN_XML = """<domain type='test'><name>%s</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


@pytest.fixture
def conn():
    libvirt.registerErrorHandler(lambda *args: None, None)
    conn = libvirt.open('test:///default')
    made = [conn.defineXML(DOMAIN_XML % name) for name in ('web-1', 'web-2', 'db-1')]
    yield conn
    for dom in made:
        dom.undefine()
    conn.close()


def test_lookup_by_name_and_uuid(conn):
    dom = lookup_domain(conn, 'web-1')
    assert lookup_domain(conn, dom.UUIDString()).name() == 'web-1'


def test_find_domain_by_name_or_uuid_or_none(conn):
    dom = lookup_domain(conn, 'web-1')
    assert find_domain(conn, name='web-1').UUIDString() == dom.UUIDString()
    assert find_domain(conn, uuid=dom.UUIDString()).name() == 'web-1'
    assert find_domain(conn, name='ghost') is None
    assert find_domain(conn, uuid='00000000-0000-4000-8000-000000000000') is None
    # any other error is one, named: not "there is no such domain"
    with pytest.raises(OperationFailed, match='^domain uuid not-a-uuid: .*Invalid UUID'):
        find_domain(conn, uuid='not-a-uuid')


def test_missing_domain_says_how_to_look(conn):
    with pytest.raises(DomainNotFound) as err:
        lookup_domain(conn, 'nope')
    assert str(err.value) == "domain 'nope' not found on test:///default: check the name with 'virsh list --all'"


def test_resolve_globs_names_and_missing(conn):
    found, missing = resolve_domains(conn, ['web-*', 'db-1', 'web-1', 'ghost', 'none-*'])
    assert [label for label, _dom in found] == ['web-1', 'web-2', 'db-1']
    assert missing == ['ghost']


def test_unreachable_uri_is_one_line_with_advice():
    with pytest.raises(ConnectionFailed) as err:
        connect('qemu+unix:///system?socket=/nonexistent/libvirt-sock')
    text = str(err.value)
    assert '\n' not in text
    assert text.startswith('cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent/libvirt-sock: ')
    assert 'is the libvirt daemon (libvirtd or virtqemud) running' in text


def test_for_each_keeps_every_outcome(conn):
    found, _missing = resolve_domains(conn, ['*'])

    def work(label, dom):
        if label == 'web-2':
            raise KvmError('web-2 broke')
        return dom.name().upper()

    outcomes = for_each(found, work)
    assert [(label, result, str(error) if error else None) for label, result, error in outcomes] == [
        ('db-1', 'DB-1', None), ('test', 'TEST', None), ('web-1', 'WEB-1', None), ('web-2', None, 'web-2 broke')]


def test_one_line():
    assert one_line('a\n  b\tc ') == 'a b c'


def test_missing_libvirt_fails_with_install_hint(monkeypatch, capsys):
    """The one path a real host cannot show here: neither this Python nor the system one has libvirt."""
    monkeypatch.setattr(_libvirt, 'LIBVIRT_IMPORT_ERROR', 'ImportError: No module named libvirt')
    monkeypatch.setattr(_libvirt, 'has_respawned', lambda: False)
    monkeypatch.setattr(_libvirt, 'probe_interpreters_for_module', lambda paths, module: None)

    class Module:
        def fail_json(self, **result):
            print(json.dumps(result))
            raise SystemExit(1)

    with pytest.raises(SystemExit):
        _libvirt.ensure_libraries(Module())
    result = json.loads(capsys.readouterr().out)
    assert 'libvirt-python (or the python3-libvirt package)' in result['msg']
    assert '\n' not in result['msg']


def test_respawns_into_the_python_that_has_libvirt(monkeypatch):
    monkeypatch.setattr(_libvirt, 'LIBVIRT_IMPORT_ERROR', 'ImportError: No module named libvirt')
    monkeypatch.setattr(_libvirt, 'has_respawned', lambda: False)
    monkeypatch.setattr(_libvirt, 'probe_interpreters_for_module', lambda paths, module: '/usr/bin/python3')
    calls = []

    def respawn(interpreter):
        calls.append(interpreter)
        raise SystemExit(0)

    monkeypatch.setattr(_libvirt, 'respawn_module', respawn)
    with pytest.raises(SystemExit):
        _libvirt.ensure_libraries(object())
    assert calls == ['/usr/bin/python3']


def rpc_error(code, text):
    exc = libvirt.libvirtError(text)
    exc.err = (code, libvirt.VIR_FROM_RPC, text, 2, None, None, None, 0, 0)
    return exc


@pytest.mark.parametrize('code, text', [
    (libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed'),
    (libvirt.VIR_ERR_SYSTEM_ERROR, 'Cannot recv data: Connection reset by peer'),
])
def test_a_connection_that_breaks_mid_task_says_the_outcome_is_unknown(code, text):
    # What libvirtd restarting in the middle of a bulk snapshot gives (tests/integration/targets/reliability).
    error = _libvirt.translate(rpc_error(code, text), "domain 'web-1'")
    assert isinstance(error, ConnectionFailed)
    assert str(error).startswith("domain 'web-1': the connection to libvirt broke in the middle of the task (%s)" % text)
    assert 'may or may not have happened' in str(error) and 'run the task again' in str(error)


def test_a_connection_that_cannot_be_opened_asks_for_the_daemon():
    error = _libvirt.translate(rpc_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect socket to '/x': Connection refused"),
                               connecting=True)
    assert str(error).endswith('is the libvirt daemon (libvirtd or virtqemud) running and the URI right?')


# ---------------------------------------------------------------- stop signals (run_module, for_each)

@pytest.mark.parametrize('signame', ['SIGTERM', 'SIGHUP', 'SIGINT'])
def test_a_stop_signal_runs_the_rollbacks_and_says_what_they_did(run_module, signame):
    undone = []

    def work():
        try:
            os.kill(os.getpid(), getattr(signal, signame))
            raise AssertionError('the signal did not interrupt')
        except BaseException as exc:
            undone.append(type(exc))
            _libvirt.note_undone(exc, 'the thing was put back')
            raise

    result = run_module(work)
    assert undone and issubclass(undone[0], KeyboardInterrupt)
    assert result['failed'] is True
    assert result['msg'] == 'interrupted by %s: the thing was put back' % signame
    assert result['interrupted'] == dict(signal=signame, done=['the thing was put back'])


def test_a_second_signal_does_not_cut_the_cleanup_short(run_module):
    cleaned = []

    def work():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # systemd may send it again: ignored now
            cleaned.append(True)

    result = run_module(work)
    assert cleaned == [True]
    assert result['msg'] == ('interrupted by SIGTERM: the operation under way may have completed; '
                             'nothing needed undoing')


def test_a_normal_run_is_untouched(run_module):
    assert run_module(lambda: dict(changed=False, x=1)) == dict(changed=False, x=1)


def test_a_plain_keyboard_interrupt_reports_what_was_undone_too(run_module):
    def work():
        try:
            raise KeyboardInterrupt()
        except BaseException as exc:
            _libvirt.note_undone(exc, 'the thing was put back')
            raise

    result = run_module(work)
    assert result['msg'] == 'interrupted by SIGINT: the thing was put back'
    assert result['interrupted'] == dict(signal='SIGINT', done=['the thing was put back'])


def test_bulk_work_stops_at_sigterm_and_names_the_untouched_domains(run_module):
    """A bulk vm_snapshot that gets SIGTERM touches no domain still queued, and says which."""
    touched = []

    def work(label, _item):
        touched.append(label)
        if label == 'web-1':
            time.sleep(0.2)  # the main thread has queued the others and waits for results
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the main thread takes the signal and cancels the queue meanwhile
        return dict(domain=label, changed=True)

    items = [('web-%d' % n, None) for n in range(1, 5)]
    result = run_module(lambda: for_each(items, work, workers=1))
    assert touched == ['web-1']
    assert result['failed'] and result['interrupted']['signal'] == 'SIGTERM'
    assert result['msg'] == ('interrupted by SIGTERM: the 3 domain(s) still queued were not touched: '
                             'web-2, web-3, web-4')
    assert result['results'] == [dict(domain='web-1', changed=True)]   # what was done before the signal
    assert result['changed'] is True
