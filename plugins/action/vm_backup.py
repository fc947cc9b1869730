# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup with a progress line: the module runs asynchronously, and this prints what it reports.

Every ``kvm.snapshots.vm_backup`` task comes here (an action plugin of the module's
name). With ``progress_interval`` above 0 and no ``async:`` of the task's own, the
module starts through Ansible's ``async_wrapper`` (``_execute_module(wrap_async=True)``,
as every ``async:`` task does), with ``progress_file`` set to a fresh name in the
remote async directory. Then this polls ``async_status`` (the module behind
``ansible.builtin.async_status``), and every ``progress_interval`` seconds reads the
small JSON file the module rewrites (``cat`` on the managed node) and prints one line
with ``Display().display()``: in the ``ansible-playbook`` output and, through it, in
AWX's job log. The task's result is the module's own, as ``async_status`` returns it
without the job's bookkeeping keys.

A task with ``async:`` (the user polls, or fires and forgets) and ``progress_interval: 0``
run the module exactly as a module without this plugin would.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import threading
import time

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

DEFAULT_INTERVAL = 30           # the module's documented default
ASYNC_LIMIT = 10 * 365 * 86400  # async_wrapper's time limit: none in practice (the task's own timeout: still applies)
FIRST_POLL = 0.05               # seconds before the first poll; doubled after each, up to MAX_POLL
MAX_POLL = 2.0
POLL_FAILURES = 12              # connection failures in a row tolerated while polling (a network bounce)
BOOKKEEPING = ('ansible_job_id', 'finished', 'started', 'results_file', 'stderr', 'stderr_lines')


def parse_interval(value):
    """``(seconds, None)`` for a valid ``progress_interval``, else ``(None, message)``."""
    if value is None:
        return DEFAULT_INTERVAL, None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or isinstance(value, bool) or (isinstance(value, float) and value != seconds):
        return None, 'progress_interval must be a whole number of seconds (0: no progress lines), got %r' % (value,)
    if seconds < 0:
        return None, 'progress_interval must be 0 (no progress lines) or a number of seconds, got %d' % seconds
    return seconds, None


def human_size(size):
    for unit in ('bytes', 'KiB', 'MiB', 'GiB', 'TiB'):
        if size < 1024 or unit == 'TiB':
            return '%d %s' % (size, unit) if unit == 'bytes' else '%.1f %s' % (size, unit)
        size /= 1024.0
    return None  # not reached


def clock_text(seconds):
    seconds = int(round(seconds))
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def progress_line(label, info, elapsed=None):
    """One line for a progress report ``info`` (the module's JSON), or None when it says nothing yet.

    ``elapsed``: seconds in this phase as the caller counts them (the file is rewritten only when
    bytes move, so its own ``phase_seconds`` stands still in a phase without bytes or a stall).
    """
    if not isinstance(info, dict) or not info.get('phase'):
        return None
    what = info.get('domain') or info.get('state') or ''
    parts = ['%s %s: %s' % (label, what, info['phase']) if what else '%s: %s' % (label, info['phase'])]
    done, total = info.get('done') or 0, info.get('total')
    # A file not rewritten for a while means no bytes moved meanwhile: the rate counts that time too.
    seconds = max(info.get('phase_seconds') or 0, elapsed or 0)
    if total:
        parts[0] += ' %d%%' % min(100, done * 100 // total)
        parts.append('%s of %s' % (human_size(done), human_size(total)))
        if done and seconds > 0:
            rate = done / seconds
            parts.append('%s/s' % human_size(rate))
            parts.append('ETA %s' % clock_text(max(0, total - done) / rate))
    else:
        parts.append('for %s' % clock_text(seconds))
    if info.get('disk'):
        parts.append('disk %s' % info['disk'])
    if info.get('file'):
        parts.append('writing %s' % info['file'])
    return ', '.join(parts)


class PhaseClock:
    """Counts how long each phase of the module has lasted, on this side's clock."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.starts = {}

    def elapsed(self, info):
        if not isinstance(info, dict):
            return None
        try:
            phase_seconds = float(info.get('phase_seconds') or 0)
            key = (info.get('phase'), round(float(info.get('seconds') or 0) - phase_seconds, 1))
        except (TypeError, ValueError):
            return None
        now = self.clock()
        start = self.starts.setdefault(key, now - phase_seconds)
        return now - start


class Stopped(BaseException):
    """SIGINT or SIGTERM reached this worker while it waited (Ctrl-C, AWX cancelling the job)."""

    def __init__(self, signum):
        super(Stopped, self).__init__(signum)
        self.signum = signum


SIGNALLED = []   # the stop signals this worker received while it waited (an exception alone may be swallowed)


def _stopped(signum, _frame):
    SIGNALLED.append(signum)
    raise Stopped(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def job_running(job):
    """Whether the job file's content ``job`` says the job still runs (as ``async_status`` reads it)."""
    return isinstance(job, dict) and 'started' in job and not job.get('finished')


def module_result(status, given_progress_file):
    """The module's own result out of ``async_status``'s answer for the finished job."""
    result = {key: value for key, value in status.items() if key not in BOOKKEEPING}
    module_args = (result.get('invocation') or {}).get('module_args')
    if isinstance(module_args, dict) and 'progress_file' in module_args:
        module_args['progress_file'] = given_progress_file   # as the task said it, not the name chosen here
    return result


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        interval, problem = parse_interval(self._task.args.get('progress_interval'))
        if problem:
            result.update(failed=True, msg=problem + ' (nothing was done)')
            return result
        # Check mode copies nothing, and ansible-core before 2.18 refuses async in check mode.
        if self._task.async_val or not interval or self._connection.has_native_async or self._task.check_mode:
            return merge_hash(result, self._run_plain(task_vars))
        return merge_hash(result, self._run_watched(task_vars or {}, interval))

    def _run_plain(self, task_vars):
        """As ansible.builtin's ``normal`` action runs a module (the task's own ``async:`` included)."""
        wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
        result = self._execute_module(task_vars=task_vars, wrap_async=wrap_async)
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _label(self, task_vars):
        host = task_vars.get('inventory_hostname') or ''
        if self._task.delegate_to and self._task.delegate_to != host:
            host = '%s -> %s' % (host, self._task.delegate_to)
        return '[%s] vm_backup' % host if host else 'vm_backup'

    def _run_watched(self, task_vars, interval):
        async_dir = self._remote_expand_user(self.get_shell_option('async_dir', default='~/.ansible_async'))
        given = self._task.args.get('progress_file')
        progress_file = given or self._connection._shell.join_path(
            async_dir, 'kvmsnap-progress-%s.json' % secrets.token_hex(8))
        module_args = dict(self._task.args, progress_file=progress_file)
        saved = self._task.async_val
        self._task.async_val = ASYNC_LIMIT   # async_wrapper kills the module after this many seconds
        try:
            started = self._execute_module(module_args=module_args, task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = saved
        jid = started.get('ansible_job_id')
        if started.get('failed') or not jid:
            started.pop('changed', None)
            return started
        display.vvv('vm_backup: async job %s, progress in %s' % (jid, progress_file))
        # Ctrl-C and AWX's cancel end the worker with SIGINT or SIGTERM: the detached module
        # would go on, so it gets SIGTERM first and rolls back as a synchronous one would.
        handlers = {}
        del SIGNALLED[:]
        if threading.current_thread() is threading.main_thread():
            handlers = {signum: signal.signal(signum, _stopped) for signum in STOP_SIGNALS}
        finished = False
        stopped = None
        try:
            status = self._wait(jid, async_dir, progress_file, interval, task_vars)
            finished = True
        except Stopped as exc:
            stopped = exc.signum
        finally:
            if not finished:
                # Another SIGINT/SIGTERM now (ansible-playbook ends its workers) would end this worker
                # before the module has its SIGTERM: they wait until it has.
                for signum in handlers:
                    signal.signal(signum, signal.SIG_IGN)
                self._stop_module(progress_file)
            stopped = stopped or (SIGNALLED[0] if SIGNALLED else None)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self._cleanup(jid, async_dir, None if given else progress_file)
        if stopped is not None:
            os.kill(os.getpid(), stopped)   # now to the worker's own handler, which ends it
            return dict(failed=True, msg='stopped by %s' % signal.Signals(stopped).name)
        return module_result(status, given)

    def _status(self, jid, async_dir, task_vars):
        return self._execute_module(module_name='ansible.legacy.async_status', task_vars=task_vars,
                                    module_args=dict(jid=jid, _async_dir=async_dir))

    def _wait(self, jid, async_dir, progress_file, interval, task_vars):
        """Poll until the job is finished; a progress line each ``interval`` seconds meanwhile.

        A poll reads the job's file with one ``cat`` (a shell command, not a module run: cheap
        enough to poll a short task every fraction of a second); once it no longer says
        running, ``async_status`` gives the job's result the standard way.
        """
        label = self._label(task_vars)
        phase_clock = PhaseClock()
        job_file = self._connection._shell.join_path(async_dir, jid)
        next_line = time.monotonic() + interval
        delay = FIRST_POLL
        failures = 0
        while True:
            if SIGNALLED:   # raised inside a connection call that turned it into its own error
                raise Stopped(SIGNALLED[0])
            time.sleep(max(0.0, min(delay, next_line - time.monotonic())) or FIRST_POLL)
            delay = min(delay * 2, MAX_POLL, interval)
            try:
                if not job_running(self._read_json(job_file)):
                    status = self._status(jid, async_dir, task_vars)
                    if status.get('finished') or status.get('failed') or status.get('skipped'):
                        return status
            except AnsibleConnectionFailure as exc:
                failures += 1
                if failures > POLL_FAILURES:
                    raise
                display.vvvv('vm_backup: polling job %s failed, trying again: %s' % (jid, exc))
                try:
                    self._connection.reset()
                except Exception:  # pylint: disable=broad-except
                    pass
                continue
            failures = 0
            if time.monotonic() >= next_line:
                info = self._read_progress(progress_file)
                line = progress_line(label, info, phase_clock.elapsed(info))
                if line:
                    display.display(line)
                next_line = time.monotonic() + interval

    def _read_json(self, path):
        """The JSON document in the remote file ``path``; None when it is missing or not (yet) JSON."""
        res = self._low_level_execute_command('cat %s' % shlex.quote(path), sudoable=True)
        if res.get('rc') != 0:
            return None
        try:
            return json.loads(res.get('stdout') or '')
        except ValueError:
            return None

    def _read_progress(self, progress_file):
        """The module's progress report (a dict), or None while there is none."""
        try:
            return self._read_json(progress_file)
        except AnsibleConnectionFailure:
            return None

    def _stop_module(self, progress_file):
        """The play gave up on the job (Ctrl-C, timeout, a failed connection): SIGTERM the module, as a sync run would."""
        try:
            info = self._read_progress(progress_file) or {}
            pid = info.get('pid')
            if isinstance(pid, int) and pid > 1:
                self._low_level_execute_command('kill -TERM %d' % pid, sudoable=True)
        except Exception:  # pylint: disable=broad-except
            pass  # best effort, on the way out of a failure

    def _cleanup(self, jid, async_dir, progress_file):
        """Remove the job's file (as ``async_status mode=cleanup`` would) and a progress file a killed module left."""
        paths = [self._connection._shell.join_path(async_dir, jid)] + ([progress_file] if progress_file else [])
        try:
            self._low_level_execute_command('rm -f -- %s' % ' '.join(shlex.quote(p) for p in paths), sudoable=True)
        except Exception as exc:  # pylint: disable=broad-except
            display.vvvv('vm_backup: could not remove the async job file of %s: %s' % (jid, exc))
        self._remove_tmp_path(self._connection._shell.tmpdir)
