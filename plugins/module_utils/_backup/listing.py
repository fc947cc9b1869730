# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backups in a place (a ``dest`` directory; a repository beside it), newest first: vm_backup_info.

Each source is one function ``(place, domain, warnings) -> [backup dict]`` in ``SOURCES``,
keyed by the place's kind; ``list_backups`` filters by domain and sorts what it returns.
A backup dict has the keys of ``FIELDS`` (vm_backup_info's RETURN documents them).
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, looks_like_uuid

from .catalog import _complete_kind, read_manifest
from .directory import tree_size
from .names import NAME_PATTERN, OLD_NAME_PATTERN, candidate
from .repository import Repository
from .request import repository_config

FIELDS = ('name', 'path', 'id', 'time', 'domain', 'uuid', 'size', 'added', 'snapshots', 'format', 'compression',
          'verified')
# What a complete backup's suffix says it is: (format, compression)
SUFFIX_FORMATS = {'.tar.zst': ('archive', 'zstd'), '.tar': ('archive', 'none'), None: ('directory', None)}


@dataclasses.dataclass(frozen=True)
class Place:
    """Where backups are: ``kind`` names the source in ``SOURCES`` (``dest``: a directory of backups)."""

    kind: str
    location: str
    options: dict = dataclasses.field(default_factory=dict)   # what a source needs besides (credentials...)


def utc_time(created):
    """``created`` (ISO 8601) as a UTC datetime, or None when it is not one."""
    try:
        when = datetime.datetime.fromisoformat(created.replace('Z', '+00:00'))
    except (AttributeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def iso_utc(when):
    return when.isoformat().replace('+00:00', 'Z')


def order_key(backup):
    """Sort key, oldest first: the time to the millisecond (the manifest says seconds, the name adds the
    milliseconds when its stamp is the same second), then the name."""
    when = utc_time(backup['time'])
    seconds = when.timestamp() if when else 0.0
    match = NAME_PATTERN.match(backup['name'] or '')
    if when and match and match.group('stamp') == when.strftime('%Y%m%dT%H%M%S'):
        seconds += int(match.group('ms')) / 1000.0
    return (seconds, backup['name'] or '')


def matches(backup, domain):
    """Whether ``backup`` is the domain ``domain`` names: its name, or (a UUID) its UUID."""
    if not domain:
        return True
    if backup['domain'] == domain:
        return True
    return looks_like_uuid(domain) and str(backup['uuid']).replace('-', '').lower() == domain.replace('-', '').lower()


def dest_entry(path, match, manifest):
    """The backup dict of the complete backup at ``path`` whose name matched ``match``."""
    fmt, compression = SUFFIX_FORMATS[match.group('suffix')]
    size = tree_size(path) if fmt == 'directory' else os.lstat(path).st_size
    when = utc_time(manifest.created)
    return dict(name=manifest.name, path=path, id=None, time=iso_utc(when) if when else manifest.created,
                domain=manifest.domain_name, uuid=manifest.uuid, size=size, added=size,
                snapshots=len(manifest.order), format=fmt, compression=compression, verified=None)


def dest_backups(place, domain, warnings):
    """The complete backups in the directory ``place.location``.

    Hidden names (a backup being written, ``.<name>.partial-*``) and names that are not
    backup names are passed over silently; a backup name without a readable manifest
    is passed over with a warning. With a UUID as ``domain``, names with another UUID's
    tag are not even opened.
    """
    dest = place.location
    if not os.path.isabs(dest):
        raise InvalidInput('dest must be an absolute path, got %r: give the directory vm_backup wrote the backups '
                           'into (its dest)' % dest)
    if not os.path.lexists(dest):
        warnings.append('dest %s does not exist: no backups listed' % dest)
        return []
    if not os.path.isdir(dest):
        raise InvalidInput('dest %s is not a directory: give the directory vm_backup wrote the backups into '
                           '(its dest), not a backup in it' % dest)
    try:
        entries = list(os.scandir(dest))
    except OSError as exc:
        raise InvalidInput('cannot list dest %s: %s: run as a user who may read it (become: true)'
                           % (dest, exc.strerror or exc)) from None
    by_uuid = domain if domain and looks_like_uuid(domain) else None
    found = []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.startswith('.'):
            continue
        match = NAME_PATTERN.match(entry.name) or OLD_NAME_PATTERN.match(entry.name)
        if match is None or not _complete_kind(entry, match):
            continue
        if by_uuid and candidate(entry.name, by_uuid) is None:
            continue
        manifest = read_manifest(entry.path)
        try:
            if manifest is None:
                if os.path.lexists(entry.path):     # not removed meanwhile (a backup's retention)
                    warnings.append('%s is not listed: it has no readable vm_backup manifest (damaged, or not a '
                                    'backup made by vm_backup)' % entry.path)
                continue
            found.append(dest_entry(entry.path, match, manifest))
        except FileNotFoundError:
            continue
    return found


SOURCES = dict(dest=dest_backups)


def list_backups(place, domain=None):
    """``(backups, warnings)``: the backups at ``place`` (of ``domain``, a name or UUID, when given), newest first."""
    warnings = []
    backups = [backup for backup in SOURCES[place.kind](place, domain, warnings) if matches(backup, domain)]
    backups.sort(key=order_key, reverse=True)
    return backups, warnings


def repository_backups(place, _domain, _warnings):
    """The backups in the restic repository ``place.options['config']``, from its snapshot list alone."""
    found = Repository(place.options['config']).listed()
    for backup in found:
        when = utc_time(backup['time'])
        backup['time'] = iso_utc(when.replace(microsecond=0)) if when else backup['time']
    return found


SOURCES['repository'] = repository_backups


def place_of(params):
    """The Place vm_backup_info's ``params`` name."""
    config = repository_config(params)
    if config:
        return Place('repository', config.location, dict(config=config))
    return Place('dest', params['dest'])


def backup_info(params):
    """vm_backup_info: its result for the module's ``params``."""
    backups, warnings = list_backups(place_of(params), params.get('domain'))
    result = dict(changed=False, backups=backups, count=len(backups))
    if warnings:
        result['warnings'] = warnings
    return result
