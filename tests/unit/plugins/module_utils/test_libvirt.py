# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Connections, domain lookup and error translation, on libvirt's test:///default driver."""

from __future__ import annotations

import json

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (  # noqa: E402
    ConnectionFailed,
    DomainNotFound,
    KvmError,
    connect,
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
