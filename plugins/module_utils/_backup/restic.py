# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The restic program: its environment (secrets never on a command line), its runs, its errors in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed, one_line

from .stage import Stage

MISSING = 'restic not found: install the restic package (Debian, Ubuntu: apt install restic; EL: dnf install restic from EPEL)'
# restic 0.14 says these in its "Fatal:" lines; each gets its own way out.
NO_REPOSITORY = ('unable to open config file', 'Is there a repository at the following location')
WRONG_PASSWORD = ('wrong password or no key found',)
LOCKED = ('repository is already locked',)
NO_SNAPSHOT = ('no matching ID found', 'no snapshot found', 'ambiguous ID')


class RepositoryError(OperationFailed):
    """restic refused or failed; the message names the repository and the way out."""


class RepositoryMissing(RepositoryError):
    """No restic repository at that location."""


def location_text(repository):
    """The repository as messages and results show it: without a password in a URL's user part."""
    return re.sub(r'(?<=://)([^/@:]*):[^/@]*@', r'\1:***@', repository)


class Restic:
    """restic for one repository; the password and ``env`` reach it only through its environment."""

    def __init__(self, repository, password=None, password_file=None, env=None):
        self.repository = repository
        self.location = location_text(repository)
        self.env = dict(os.environ)
        self.env.update({str(key): str(value) for key, value in (env or {}).items()})
        self.env['RESTIC_REPOSITORY'] = repository
        self.env.pop('RESTIC_PASSWORD_COMMAND', None)
        if password_file is not None:
            self.env['RESTIC_PASSWORD_FILE'] = password_file
            self.env.pop('RESTIC_PASSWORD', None)
        elif password is not None:
            self.env['RESTIC_PASSWORD'] = password
            self.env.pop('RESTIC_PASSWORD_FILE', None)
        # What must never reach a message, even if restic echoed it.
        self.secrets = sorted({s for s in [password, repository] + list((env or {}).values())
                               if isinstance(s, str) and len(s) >= 4} - {self.location}, key=len, reverse=True)

    def scrub(self, text):
        for secret in self.secrets:
            text = text.replace(secret, '***' if secret != self.repository else self.location)
        return text

    def start(self, args, **pipes):
        """A restic process as a pipe stage, killed with the module (see ``die_with_parent``)."""
        return Stage(['restic'] + args, MISSING, env=self.env, tied=True, **pipes)

    def run(self, args, doing, stdin=subprocess.DEVNULL):
        """restic's stdout for ``args``; ``RepositoryError`` in one line if it fails."""
        stage = self.start(args, stdin=stdin, stdout=subprocess.PIPE)
        try:
            out = stage.proc.stdout.read()
            stage.proc.stdout.close()
            if stage.proc.wait() != 0:
                raise self.error(stage.raw_text(), doing)
        finally:
            stage.close()
        return out.decode('utf-8', 'replace')

    def json(self, args, doing):
        try:
            return json.loads(self.run(args + ['--json'], doing) or 'null')
        except ValueError:
            raise RepositoryError('restic gave no JSON while %s in repository %s: is it restic 0.14 or newer?'
                                  % (doing, self.location)) from None

    def error(self, text, doing, nothing='nothing was changed'):
        """The one-line error for restic's stderr ``text`` while ``doing``."""
        where = 'repository %s' % self.location
        if any(key in text for key in WRONG_PASSWORD):
            return RepositoryError('wrong password for %s while %s: check repository_password or '
                                   'repository_password_file (%s)' % (where, doing, nothing))
        if any(key in text for key in NO_REPOSITORY):
            return RepositoryMissing('there is no restic repository at %s (%s): check repository, or set '
                                     'repository_init: true to create one (%s)' % (self.location, doing, nothing))
        if any(key in text for key in LOCKED):
            return RepositoryError('%s is locked by another restic run (%s) while %s: wait for it to finish, or '
                                   'if it died, run restic unlock on the repository (%s)'
                                   % (where, self.scrub(fatal_line(text, LOCKED)), doing, nothing))
        return RepositoryError('restic failed while %s in %s: %s (%s)'
                               % (doing, where, self.scrub(fatal_line(text)) or 'no message', nothing))


def fatal_line(text, keys=None):
    """restic's own reason: the line with one of ``keys``, else its ``Fatal:`` line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if keys and any(key in line for key in keys):
            return one_line(line.replace('Fatal: ', ''))
    for line in lines:
        if line.startswith('Fatal:'):
            return one_line(line[len('Fatal:'):])
    return one_line(lines[-1]) if lines else ''
