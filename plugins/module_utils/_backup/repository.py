# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Backups in a restic repository: each one restic snapshot of the plain tar stream, tagged with its domain.

restic reads the stream on its stdin (``backup --stdin``): no staging copy on the
host, holes stay out (the tar's GNU sparse map carries them), and restic's
content-defined chunks find what earlier backups, or other domains' disks,
already stored. A restore or a verify reads it back with ``restic dump``
through the same tar reader as an archive file.
"""

from __future__ import annotations

import json
import subprocess
import tempfile

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, OperationFailed, note_undone

from .archive_reader import ArchiveSource
from .archive_writer import ArchiveSink
from .files import set_pipe_size
from .restic import NO_SNAPSHOT, RepositoryError, RepositoryMissing, Restic

TAG = 'kvm.snapshots'
DOMAIN_TAG = 'domain:'
UUID_TAG = 'uuid:'
NAME_TAG = 'backup:'
SNAPSHOTS_TAG = 'snapshots:'   # how many internal snapshots the backup holds
SIZE_TAG = 'size:'             # the stream's bytes, known once it is stored
ADDED_TAG = 'added:'           # the bytes it added to the repository (restic's data_added)


def stream_name(domain):
    """The one file a backup's restic snapshot holds."""
    return '%s.tar' % domain


def check_taggable(name):
    # restic splits --tag values at commas.
    if ',' in name:
        raise InvalidInput("domain '%s' has a comma in its name, which a restic tag cannot hold: back it up to a "
                           "dest directory instead of a repository" % name)


def tag_value(snapshot, prefix):
    for tag in snapshot.get('tags') or []:
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None


def holds(snapshot, domain):
    """Whether the backup ``snapshot`` is of ``domain``, given as its name or its UUID."""
    return domain in (tag_value(snapshot, DOMAIN_TAG), tag_value(snapshot, UUID_TAG))


def tag_number(snapshot, prefix):
    value = tag_value(snapshot, prefix)
    return int(value) if value and value.isdigit() else None


class Repository:
    """A restic repository as vm_backup's options name it."""

    def __init__(self, config):
        self.restic = Restic(config.location, password=config.password, password_file=config.password_file,
                             env=config.env)
        self.location = self.restic.location

    def exists(self):
        try:
            self.restic.run(['--no-lock', 'cat', 'config'], 'opening it')
        except RepositoryMissing:
            return False
        return True

    def ensure(self, init, check_mode):
        """True if the repository had to be created (or would be, in check mode); refused when missing without ``init``."""
        if self.exists():
            if not check_mode:
                # A run that was killed (SIGKILL, a reboot) left its lock; restic keeps it, and it would
                # block retention's forget and prune. `unlock` removes only locks whose process is gone.
                self.restic.run(['unlock'], 'removing stale locks')
            return False
        if not init:
            raise RepositoryMissing('there is no restic repository at %s: check repository, or set repository_init: '
                                    'true to create one (nothing was paused or written)' % self.location)
        if not check_mode:
            self.restic.run(['init'], 'creating it')
        return True

    def snapshots(self, uuid=None):
        """Our backups (of the domain with ``uuid``), oldest first."""
        tags = TAG + (',' + UUID_TAG + uuid.lower() if uuid else '')
        found = self.restic.json(['--no-lock', 'snapshots', '--tag', tags], 'listing its backups') or []
        return sorted(found, key=lambda snap: snap['time'])

    def locate(self, src, domain):
        """The backup ``src`` ('latest' of ``domain``, or a snapshot ID or its prefix) names."""
        if src == 'latest':
            if not domain:
                raise InvalidInput('src: latest needs domain (a name or UUID) to say whose latest backup')
            mine = [snap for snap in self.snapshots() if holds(snap, domain)]
            if not mine:
                raise InvalidInput("repository %s holds no backup of domain '%s': check domain, or list the backups "
                                   "with kvm.snapshots.vm_backup_info" % (self.location, domain))
            return RepositoryBackup(self, mine[-1])
        unknown = InvalidInput('repository %s has no snapshot %s: give an ID that kvm.snapshots.vm_backup_info '
                               'lists, or src: latest' % (self.location, src))
        try:
            found = self.restic.json(['--no-lock', 'snapshots', src], 'looking up snapshot %s' % src)
        except RepositoryError as exc:
            if any(key in str(exc) for key in NO_SNAPSHOT):
                raise unknown from None
            raise
        if not found:
            raise unknown
        snap = found[0]
        if TAG not in (snap.get('tags') or []):
            raise InvalidInput('snapshot %s in repository %s was not made by kvm.snapshots.vm_backup: give the ID of '
                               'one of its backups' % (snap['short_id'], self.location))
        if domain and not holds(snap, domain):
            raise InvalidInput("snapshot %s in repository %s holds domain '%s' (uuid %s), not '%s': check src or "
                               "domain" % (snap['short_id'], self.location, tag_value(snap, DOMAIN_TAG),
                                           tag_value(snap, UUID_TAG), domain))
        return RepositoryBackup(self, snap)

    def listed(self):
        """Our backups as vm_backup_info lists them (``listing.FIELDS``), from the snapshot list alone."""
        return [dict(name=tag_value(snap, NAME_TAG), path=None, id=snap['short_id'], time=snap['time'],
                     domain=tag_value(snap, DOMAIN_TAG), uuid=tag_value(snap, UUID_TAG),
                     size=tag_number(snap, SIZE_TAG), added=tag_number(snap, ADDED_TAG),
                     snapshots=tag_number(snap, SNAPSHOTS_TAG), format='repository', compression=None, verified=None)
                for snap in self.snapshots()]

    def upload(self, name, domain, uuid, snapshots=0):
        return Upload(self, name, domain, uuid, snapshots)

    def annotate(self, snapshot_id, name, tags):
        """Add ``tags`` to a backup's snapshot; restic stores it again under a new ID, which is returned."""
        self.restic.run(['tag', '--add', ','.join(tags), snapshot_id], 'recording the size of backup %s' % name)
        found = self.restic.json(['--no-lock', 'snapshots', '--tag', '%s,%s%s' % (TAG, NAME_TAG, name)],
                                 'looking up backup %s' % name) or []
        return found[-1]['short_id'] if found else snapshot_id

    def forget(self, uuid, policy, check_mode):
        """Apply ``policy`` (restic forget options) to the domain's backups; the IDs that go, oldest first."""
        args = ['forget', '--tag', '%s,%s%s' % (TAG, UUID_TAG, uuid.lower()), '--group-by', '']
        for option, count in policy:
            args += ['--%s' % option, str(count)]
        groups = self.restic.json(args + ['--dry-run'], 'choosing the backups to remove') or []
        doomed = sorted((snap for group in groups for snap in group.get('remove') or []), key=lambda s: s['time'])
        ids = [snap['id'] for snap in doomed]
        if ids and not check_mode:
            # Exactly the snapshots the dry run chose: a backup made meanwhile is not counted twice.
            self.restic.run(['forget'] + ids, 'removing old backups')
            self.restic.run(['prune'], 'pruning data no backup uses')
        return ids


def backup_source(request):
    """What state verified or restored reads: ``src`` as a path, or the backup it names in the repository."""
    if request.repository is None:
        return request.src
    return Repository(request.repository).locate(request.src, request.domain)


class RepositoryBackup:
    """One backup in the repository, read back as the tar stream it was written as."""

    def __init__(self, repository, snapshot):
        self.repository = repository
        self.snapshot = snapshot
        self.id = snapshot['id']
        self.domain = tag_value(snapshot, DOMAIN_TAG)

    def __str__(self):
        return 'snapshot %s in repository %s' % (self.snapshot['short_id'], self.repository.location)

    def result(self):
        return dict(path=None, id=self.id, repository=self.repository.location)

    def open(self):
        """The archive reader over ``restic dump``."""
        restic = self.repository.restic
        stage = restic.start(['dump', self.id, '/' + stream_name(self.domain)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE)
        set_pipe_size(stage.proc.stdout.fileno())
        return ArchiveSource(str(self), stage=stage, fails=lambda text: restic.error(text, 'reading %s' % self))


class Upload:
    """The backup being sent: restic stores it as a snapshot only once the whole stream has reached its stdin."""

    undone = 'no backup was stored'

    def __init__(self, repository, name, domain, uuid, snapshots):
        check_taggable(domain)
        self.repository = repository
        self.name = name
        self.place = repository.location
        self.path = None              # no file grows on this host: restic sends the data on
        self.tags = [TAG, DOMAIN_TAG + domain, UUID_TAG + uuid.lower(), NAME_TAG + name, SNAPSHOTS_TAG + str(snapshots)]
        self.filename = stream_name(domain)
        self.stage = self.out = self.sink = None
        self.summary = {}

    def open(self, mtime):
        args = ['backup', '--stdin', '--stdin-filename', self.filename, '--json', '--quiet']
        for tag in self.tags:
            args += ['--tag', tag]
        # restic's stdout (its summary) goes to a file: a pipe nobody reads could fill and stall it.
        self.out = tempfile.TemporaryFile()
        self.stage = self.repository.restic.start(args, stdin=subprocess.PIPE, stdout=self.out)
        set_pipe_size(self.stage.proc.stdin.fileno())
        self.sink = ArchiveSink(self.stage.proc.stdin.fileno(), self.name, mtime, 'none', None, 0,
                                reader=self._broken)
        return self.sink

    def _broken(self):
        self.stage.proc.stdin.close()
        return self.repository.restic.error(self.stage.text(), 'storing the backup', 'no backup was stored')

    def commit(self):
        """End the stream; wait for restic to store the snapshot; the stream's size."""
        self.sink.close()
        self.stage.proc.stdin.close()
        if self.stage.proc.wait() != 0:
            raise self.repository.restic.error(self.stage.raw_text(), 'storing the backup', 'no backup was stored')
        self.out.seek(0)
        for line in self.out.read().decode('utf-8', 'replace').splitlines():
            if '"summary"' in line:
                self.summary = json.loads(line)
        if 'snapshot_id' not in self.summary:
            raise OperationFailed('restic stored the backup in %s but named no snapshot: check the repository with '
                                  'restic snapshots' % self.repository.location)
        size = self.sink.size()
        # For vm_backup_info, which could otherwise only learn them by reading the repository's index.
        # The backup is stored already: should this fail, it is listed without them.
        try:
            self.summary['snapshot_id'] = self.repository.annotate(
                self.summary['snapshot_id'], self.name,
                [SIZE_TAG + str(size), ADDED_TAG + str(self.summary.get('data_added', 0))])
        except RepositoryError:
            pass
        return size

    def remove(self, exc):
        """Stop restic before its stdin closes: it must never take a cut stream for a whole one."""
        if self.stage is None:
            return
        self.stage.kill()
        if self.sink is not None:
            self.sink.abort()
        note_undone(exc, 'the unfinished upload to repository %s was stopped: no backup was stored'
                    % self.repository.location)

    def close(self):
        for handle in (self.stage.proc.stdin if self.stage else None, self.out):
            if handle is not None and not handle.closed:
                handle.close()
        if self.stage is not None:
            self.stage.close()

    def result(self):
        return dict(path=None, id=self.summary['snapshot_id'], repository=self.repository.location,
                    added=self.summary.get('data_added'))
