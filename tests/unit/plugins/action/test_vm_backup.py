# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vm_backup's action plugin with a fake ``_execute_module``: what it runs, what it prints, what it returns."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.task import Task

from ansible_collections.kvm.snapshots.plugins.action import vm_backup as action

JOB = 'j123.456'
ASYNC_DIR = '/root/.ansible_async'
MODULE_RESULT = dict(changed=True, backup=dict(path='/b/x.tar.zst', size=3), removed=[],
                     invocation=dict(module_args=dict(domain='x', progress_file=None, progress_interval=1)))
PROGRESS = dict(pid=4242, phase='copying', done=512 << 20, total=1 << 30, phase_seconds=4.0, seconds=5.0,
                domain='web-1', disk='vda', file='/b/.web-1.tar.zst.partial-ab12', state='present')


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Remote:
    """The managed node as the plugin sees it: the job's file, the progress file, the commands run."""

    def __init__(self, clock, runs_for, result=None, progress=None):
        self.clock = clock
        self.end = clock.now + runs_for
        self.result = dict(MODULE_RESULT if result is None else result)
        self.progress = PROGRESS if progress is None else progress
        self.commands = []
        self.executed = []

    def execute_module(self, module_name=None, module_args=None, task_vars=None, wrap_async=False, **_kw):
        self.executed.append(dict(module_name=module_name, module_args=dict(module_args or {}), wrap_async=wrap_async))
        if module_name is None and not module_args:
            return dict(self.result)    # a plain run: the task's args, the module's result
        if module_name is None:
            assert wrap_async
            return dict(started=1, finished=0, ansible_job_id=JOB, results_file=ASYNC_DIR + '/' + JOB, changed=True)
        assert module_name == 'ansible.legacy.async_status'
        if self.clock.now < self.end:
            return dict(started=1, finished=0, ansible_job_id=JOB)
        return dict(self.result, finished=1, ansible_job_id=JOB)

    def low_level(self, cmd, sudoable=True, **_kw):
        self.commands.append(cmd)
        if cmd.startswith('cat ') and cmd.endswith(JOB):
            running = self.clock.now < self.end
            return dict(rc=0, stdout=json.dumps(dict(started=1, finished=0) if running else self.result), stderr='')
        if cmd.startswith('cat '):
            return dict(rc=0, stdout=json.dumps(self.progress), stderr='')
        return dict(rc=0, stdout='', stderr='')


def make_plugin(args, remote, async_val=0, check_mode=False):
    task = Task()
    task.args = dict(args)
    task.async_val = async_val
    task.check_mode = check_mode
    connection = mock.MagicMock()
    connection.has_native_async = False
    connection._shell.tmpdir = None
    connection._shell.join_path = lambda *parts: '/'.join(parts)
    plugin = action.ActionModule(task, connection, mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    plugin._execute_module = remote.execute_module
    plugin._low_level_execute_command = remote.low_level
    plugin._remote_expand_user = lambda path, sudoable=True: path.replace('~', '/root')
    plugin._remove_tmp_path = lambda *a, **k: None
    plugin.get_shell_option = lambda option, default=None: default
    return plugin


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(action.time, 'monotonic', fake)
    monkeypatch.setattr(action.time, 'sleep', fake.sleep)
    return fake


@pytest.fixture
def shown(monkeypatch):
    lines = []
    monkeypatch.setattr(action.display, 'display', lambda msg, *a, **k: lines.append(msg))
    return lines


def run(plugin):
    return plugin.run(task_vars=dict(inventory_hostname='hv1'))


def test_long_backup_prints_lines_and_returns_the_module_result(clock, shown):
    remote = Remote(clock, runs_for=10)
    plugin = make_plugin(dict(domain='web-1', dest='/b', progress_interval=3), remote)
    result = run(plugin)
    assert result == MODULE_RESULT          # exactly the module's: no job id, no finished, same changed
    started = remote.executed[0]
    assert started['wrap_async'] and started['module_name'] is None
    assert started['module_args']['progress_file'].startswith(ASYNC_DIR + '/kvmsnap-progress-')
    assert started['module_args']['domain'] == 'web-1'
    assert plugin._task.async_val == 0      # the task's own async is back
    assert 3 <= len(shown) <= 4             # one line per 3 s of a 10 s run
    assert shown[0] == ('[hv1] vm_backup web-1: copying 50%, 512.0 MiB of 1.0 GiB, 128.0 MiB/s, ETA 0:00:04, '
                        'disk vda, writing /b/.web-1.tar.zst.partial-ab12')
    # the job's file and the progress file are removed at the end
    assert any(c.startswith('rm -f -- ') and JOB in c and 'kvmsnap-progress-' in c for c in remote.commands)


def test_quick_backup_prints_nothing(clock, shown):
    remote = Remote(clock, runs_for=0.5)
    result = run(make_plugin(dict(domain='web-1', dest='/b'), remote))
    assert result == MODULE_RESULT
    assert shown == []
    # polled with a cat of the job's file, not a module run per poll
    assert [e['module_name'] for e in remote.executed] == [None, 'ansible.legacy.async_status']


def test_failure_is_the_module_failure(clock, shown):
    failure = dict(failed=True, msg="domain 'x' not found: check the name", changed=False)
    remote = Remote(clock, runs_for=1, result=failure)
    result = run(make_plugin(dict(domain='x', dest='/b', progress_interval=30), remote))
    assert result == failure


def test_given_progress_file_is_used_and_kept(clock, shown):
    remote = Remote(clock, runs_for=1)
    run(make_plugin(dict(domain='x', dest='/b', progress_file='/tmp/mine.json'), remote))
    assert remote.executed[0]['module_args']['progress_file'] == '/tmp/mine.json'
    assert not any('/tmp/mine.json' in c for c in remote.commands if c.startswith('rm '))


@pytest.mark.parametrize('args, async_val, wrap', [
    (dict(progress_interval=0), 0, False),        # progress off: a plain synchronous module run
    (dict(progress_interval=30), 600, True),      # the task's own async: passed through
    (dict(), 600, True),
])
def test_plain_runs(clock, shown, args, async_val, wrap):
    remote = Remote(clock, runs_for=0)
    plugin = make_plugin(dict(domain='x', dest='/b', **args), remote, async_val=async_val)
    run(plugin)
    assert len(remote.executed) == 1
    assert remote.executed[0]['module_name'] is None
    assert remote.executed[0]['wrap_async'] == wrap
    assert 'progress_file' not in remote.executed[0]['module_args'] or args.get('progress_file')
    assert remote.commands == [] and shown == []
    assert plugin._task.async_val == async_val


@pytest.mark.parametrize('value, message', [
    (-1, 'progress_interval must be 0 (no progress lines) or a number of seconds, got -1'),
    ('often', "progress_interval must be a whole number of seconds (0: no progress lines), got 'often'"),
    (1.5, 'progress_interval must be a whole number of seconds (0: no progress lines), got 1.5'),
])
def test_bad_interval_is_refused_before_anything_runs(clock, shown, value, message):
    remote = Remote(clock, runs_for=0)
    result = run(make_plugin(dict(domain='x', dest='/b', progress_interval=value), remote))
    assert result['failed'] and result['msg'] == message + ' (nothing was done)'
    assert remote.executed == []


def test_interval_from_a_template_string(clock, shown):
    assert action.parse_interval('5') == (5, None)
    assert action.parse_interval(None) == (30, None)


def test_connection_bounce_while_polling_is_survived(clock, shown):
    remote = Remote(clock, runs_for=3)
    real = remote.low_level
    fails = iter([True, True, False] + [False] * 100)

    def flaky(cmd, sudoable=True, **kw):
        if cmd.startswith('cat ') and next(fails):
            raise AnsibleConnectionFailure('ssh: connection reset')
        return real(cmd, sudoable, **kw)

    plugin = make_plugin(dict(domain='x', dest='/b'), remote)
    plugin._low_level_execute_command = flaky
    assert run(plugin) == MODULE_RESULT


def test_giving_up_stops_the_module(clock, shown):
    """A task timeout (or anything else that ends the wait) sends the module SIGTERM, as a sync run's end would."""
    remote = Remote(clock, runs_for=100)
    plugin = make_plugin(dict(domain='x', dest='/b'), remote)

    def timeout(*_a, **_k):
        if clock.now > 1005:
            raise KeyboardInterrupt()
        return dict(started=1, finished=0)

    plugin._read_json = mock.Mock(side_effect=lambda path: timeout() if path.endswith(JOB) else PROGRESS)
    with pytest.raises(KeyboardInterrupt):
        run(plugin)
    assert 'kill -TERM 4242' in remote.commands


def test_phase_without_bytes_counts_its_time_here():
    fake = FakeClock()
    phase_clock = action.PhaseClock(fake)
    info = dict(phase='shutting the domain down', done=0, total=None, phase_seconds=0.0, seconds=2.0, domain='x')
    assert phase_clock.elapsed(info) == 0
    fake.now += 65
    assert action.progress_line('vm_backup', info, phase_clock.elapsed(info)) == \
        'vm_backup x: shutting the domain down, for 0:01:05'


@pytest.mark.parametrize('info', [None, {}, dict(phase=''), 'text'])
def test_no_line_without_a_phase(info):
    assert action.progress_line('vm_backup', info) is None


def test_result_keeps_the_progress_file_as_given():
    status = dict(MODULE_RESULT, finished=1, ansible_job_id=JOB, results_file='/r',
                  invocation=dict(module_args=dict(progress_file='/root/.ansible_async/kvmsnap-progress-1.json')))
    assert action.module_result(status, None) == dict(MODULE_RESULT, invocation=dict(module_args=dict(progress_file=None)))


def test_ctrl_c_reaches_the_detached_module(clock, shown, monkeypatch):
    """SIGINT/SIGTERM to the worker (Ctrl-C, AWX's cancel): the module gets SIGTERM, then the worker's own handler runs."""
    remote = Remote(clock, runs_for=100)
    plugin = make_plugin(dict(domain='x', dest='/b'), remote)
    handler_while_waiting = []

    def read_json(path):
        if path.endswith(JOB):
            handler_while_waiting.append(action.signal.getsignal(action.signal.SIGTERM))
            if clock.now > 1003:
                action._stopped(action.signal.SIGTERM, None)
            return dict(started=1, finished=0)
        return PROGRESS

    plugin._read_json = read_json
    killed = []
    monkeypatch.setattr(action.os, 'kill', lambda pid, signum: killed.append((pid, signum)))
    before = action.signal.getsignal(action.signal.SIGTERM)
    result = run(plugin)
    assert handler_while_waiting[0] is action._stopped
    assert action.signal.getsignal(action.signal.SIGTERM) is before    # the worker's handler is back
    assert 'kill -TERM 4242' in remote.commands                        # the module first
    assert killed == [(action.os.getpid(), action.signal.SIGTERM)]     # then the worker's own end
    assert result == dict(failed=True, msg='stopped by SIGTERM')


def test_a_stall_lowers_the_rate():
    info = dict(PROGRESS)   # 512 MiB in 4 s by the module's last write, then nothing for 4 s more
    assert '128.0 MiB/s, ETA 0:00:04' in action.progress_line('vm_backup', info, 4.0)
    assert '64.0 MiB/s, ETA 0:00:08' in action.progress_line('vm_backup', info, 8.0)


def test_a_signal_swallowed_by_the_connection_still_stops(clock, shown, monkeypatch):
    """The signal lands inside a connection call that turns it into a connection failure: the wait ends all the same."""
    remote = Remote(clock, runs_for=100)
    plugin = make_plugin(dict(domain='x', dest='/b'), remote)
    real = remote.low_level

    def swallowing(cmd, sudoable=True, **kw):
        if cmd.startswith('cat ') and cmd.endswith(JOB) and clock.now > 1003:
            try:
                action._stopped(action.signal.SIGINT, None)
            except action.Stopped:
                raise AnsibleConnectionFailure('interrupted')
        return real(cmd, sudoable, **kw)

    plugin._low_level_execute_command = swallowing
    killed = []
    monkeypatch.setattr(action.os, 'kill', lambda pid, signum: killed.append(signum))
    assert run(plugin) == dict(failed=True, msg='stopped by SIGINT')
    assert 'kill -TERM 4242' in remote.commands and killed == [action.signal.SIGINT]
