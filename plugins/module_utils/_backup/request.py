# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup's options, checked and derived once into one request value; every default lives here."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, remote_uri_problem

DEFAULT_LEVEL = 3           # zstd level when compression_level is not set (the module docs and the backup role say so)
SUFFIXES = {'zstd': '.tar.zst', 'none': '.tar', 'directory': ''}


# vm_backup's keep_* options, as restic forget options (keep itself is --keep-last).
RETENTION = (('keep', 'keep-last'), ('keep_daily', 'keep-daily'), ('keep_weekly', 'keep-weekly'),
             ('keep_monthly', 'keep-monthly'))
REPOSITORY_OPTIONS = ('repository_password', 'repository_password_file', 'repository_env', 'repository_init')


@dataclasses.dataclass(frozen=True)
class RepositoryConfig:
    """A restic repository and how to open it; repr() never shows a secret."""

    location: str
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    password_file: Optional[str] = None
    env: dict = dataclasses.field(default_factory=dict, repr=False)
    init: bool = False


@dataclasses.dataclass(frozen=True)
class BackupRequest:
    """state=present: where to write what, and how to treat the domain."""

    uri: str
    domain: str
    dest: Optional[str]         # None with a repository
    format: str                 # archive | directory
    compression: Optional[str]  # zstd | none; None for a directory
    level: Optional[int]        # the zstd level; None without zstd
    threads: int
    keep: Optional[int]
    if_running: str
    shutdown_timeout: int
    quiesce: bool = False
    repository: Optional[RepositoryConfig] = None
    retention: tuple = ()       # ((restic forget option, count), ...), with a repository

    @property
    def writer(self):
        """What writes it: 'zstd', 'none' (a plain tar) or 'directory'."""
        return self.compression or 'directory'

    @property
    def suffix(self):
        return SUFFIXES[self.writer]

    def options(self):
        """The options a manifest records."""
        return dict(format=self.format, compression=self.compression, compression_level=self.level,
                    if_running=self.if_running, quiesce=self.quiesce)


@dataclasses.dataclass(frozen=True)
class ReadRequest:
    """state=verified or restored: which backup, and for a restore where and how."""

    uri: str
    state: str
    src: str
    domain: Optional[str] = None
    disk_dir: Optional[str] = None   # as given
    disk_root: Optional[str] = None  # disk_dir resolved (realpath): where the disks go
    force: bool = False
    start: bool = False
    repository: Optional[RepositoryConfig] = None


def refuse_remote_uri(uri, state):
    """vm_backup reads and writes disk images where it runs: refuse a ``uri`` that may name another host.

    Only state=verified may use any URI: it reads the backup alone and opens no connection.
    """
    problem = remote_uri_problem(uri)
    if problem:
        raise InvalidInput('vm_backup state=%s reads and writes the disk images on the machine the module runs on, '
                           'so uri must name the hypervisor of that machine, and %s: run the task on the hypervisor '
                           'itself (as its inventory host, or with delegate_to: the hypervisor) with uri: '
                           'qemu:///system (nothing was done)' % (state, problem))


def repository_config(params):
    """The RepositoryConfig of ``params``, None without ``repository``; its options checked."""
    location = params.get('repository')
    if not location:
        given = [key for key in REPOSITORY_OPTIONS + ('keep_daily', 'keep_weekly', 'keep_monthly') if params.get(key)]
        if given:
            raise InvalidInput('%s only appl%s with repository: set repository, or drop %s'
                               % (', '.join(given), 'ies' if len(given) == 1 else 'y', 'it' if len(given) == 1 else 'them'))
        return None
    password, password_file = params.get('repository_password'), params.get('repository_password_file')
    if (password is None) == (password_file is None):
        raise InvalidInput('repository needs exactly one of repository_password and repository_password_file '
                           '(restic encrypts every repository)')
    if password_file is not None:
        if not os.path.isabs(password_file):
            raise InvalidInput('repository_password_file must be an absolute path, got %r' % password_file)
        if not os.access(password_file, os.R_OK):
            raise InvalidInput('repository_password_file %s cannot be read: check the path and its permissions'
                               % password_file)
    if params.get('state', 'present') != 'present' and params.get('dest') is not None:
        raise InvalidInput('dest only applies to state present')
    return RepositoryConfig(location=location, password=password, password_file=password_file,
                            env=dict(params.get('repository_env') or {}), init=bool(params.get('repository_init')))


def retention(params, repository):
    """restic forget options for the keep_* options given; only keep applies to a dest."""
    for key, _option in RETENTION:
        if params.get(key) is not None and params[key] < 1:
            raise InvalidInput('%s must be 1 or more (it counts the backup just made), got %d: omit %s to keep '
                               'every backup' % (key, params[key], key))
    if not repository:
        return ()
    return tuple((option, params[key]) for key, option in RETENTION if params.get(key) is not None)


def backup_request(params):
    """The BackupRequest for vm_backup's ``params``; ``InvalidInput`` for a combination that makes no sense."""
    repository = repository_config(params)
    policy = retention(params, repository)
    if params['threads'] < 0:
        raise InvalidInput('threads must be 0 (all cores) or more, got %d' % params['threads'])
    level = params['compression_level']
    if level is not None and not 1 <= level <= 22:
        raise InvalidInput('compression_level must be between 1 and 22 (zstd levels), got %d' % level)
    if params['format'] == 'directory' and (level is not None or params['compression'] != 'zstd'):
        raise InvalidInput('compression and compression_level only apply to format archive: drop them, '
                           'or set format: archive')
    if params['compression'] == 'none' and level is not None:
        raise InvalidInput('compression_level needs compression: zstd, not none: drop compression_level, '
                           'or drop compression: none')
    if params.get('quiesce') and params['if_running'] != 'live':
        raise InvalidInput('quiesce only applies to if_running: live, not %s: drop quiesce, or set if_running: live'
                           % params['if_running'])
    if params['shutdown_timeout'] < 1:
        raise InvalidInput('shutdown_timeout must be 1 second or more, got %d' % params['shutdown_timeout'])
    for key in ('src', 'disk_dir'):
        if params.get(key) is not None:
            raise InvalidInput('%s only applies to state verified or restored, not present' % key)
    if params.get('force') or params.get('start'):
        raise InvalidInput('force and start only apply to state restored, not present')
    refuse_remote_uri(params['uri'], 'present')   # before dest, which is looked at here
    if repository:
        if params['dest'] is not None:
            raise InvalidInput('dest and repository exclude each other: a backup goes into one of them')
        if params['format'] != 'archive' or level is not None:
            raise InvalidInput('format and compression_level do not apply to a repository (restic stores the '
                               'tar stream, deduplicated and compressed itself): drop them')
        return BackupRequest(uri=params['uri'], domain=params['domain'], dest=None, format='repository',
                             compression=None, level=None, threads=params['threads'], keep=params['keep'],
                             if_running=params['if_running'], shutdown_timeout=params['shutdown_timeout'],
                             quiesce=bool(params.get('quiesce')), repository=repository, retention=policy)
    dest = params['dest']
    if dest is None:
        raise InvalidInput('state present needs dest (a directory) or repository (a restic repository)')
    if not os.path.isabs(dest):
        raise InvalidInput('dest must be an absolute path, got %r' % dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise InvalidInput('dest %s exists and is not a directory: choose a directory' % dest)
    compression = params['compression'] if params['format'] == 'archive' else None
    return BackupRequest(uri=params['uri'], domain=params['domain'], dest=dest, format=params['format'],
                         compression=compression,
                         level=(DEFAULT_LEVEL if level is None else level) if compression == 'zstd' else None,
                         threads=params['threads'], keep=params['keep'], if_running=params['if_running'],
                         shutdown_timeout=params['shutdown_timeout'], quiesce=bool(params.get('quiesce')))


def read_request(params):
    """The ReadRequest for vm_backup's ``params`` (state verified or restored)."""
    for key in ('dest', 'keep', 'keep_daily', 'keep_weekly', 'keep_monthly'):
        if params.get(key) is not None:
            raise InvalidInput('%s only applies to state present' % key)
    repository = repository_config(params)
    if params.get('quiesce'):
        raise InvalidInput('quiesce only applies to state present')
    if params['state'] == 'restored':
        refuse_remote_uri(params['uri'], 'restored')
    if params['state'] == 'verified':
        if params.get('disk_dir') is not None or params.get('force') or params.get('start'):
            raise InvalidInput('disk_dir, force and start only apply to state restored')
    disk_dir = params.get('disk_dir')
    if disk_dir is not None:
        if not os.path.isabs(disk_dir):
            raise InvalidInput('disk_dir must be an absolute path, got %r' % disk_dir)
        if not os.path.isdir(disk_dir):
            raise InvalidInput('disk_dir %s does not exist: create it first (mode 0711 or so, so that QEMU can '
                               'reach the images)' % disk_dir)
    return ReadRequest(uri=params['uri'], state=params['state'], src=params['src'], domain=params.get('domain'),
                       disk_dir=disk_dir, disk_root=os.path.realpath(disk_dir) if disk_dir else None,
                       force=bool(params.get('force')), start=bool(params.get('start')), repository=repository)
