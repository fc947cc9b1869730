# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Whether QEMU, as the user it runs as, can reach the directories a restore puts the domain's files in.

libvirt's dynamic_ownership (on by default) chowns the image files to QEMU's user when
the domain starts, but never the directories above them: QEMU must be able to search
(``x``) every directory from ``/`` down to each file, or the domain restores fine and
then cannot start.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import re
import stat
from typing import FrozenSet
from urllib.parse import urlsplit

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput

from .manifest import DISK_ROLES

QEMU_CONF = '/etc/libvirt/qemu.conf'
# Users distributions run QEMU as when qemu.conf sets none (Debian/Ubuntu, then Fedora/RHEL/SUSE).
FALLBACK_USERS = ('libvirt-qemu', 'qemu')
CREATED_MODE = 0o711     # directories a restore creates (DirectoryEntry.DEFAULT_MODE): searchable by QEMU


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who QEMU runs as: uid, primary gid, every group, and where that was read."""

    uid: int
    gid: int
    groups: FrozenSet[int]
    label: str      # 'libvirt-qemu:libvirt-qemu (uid 64055, gid 64055)'
    source: str     # 'as set in /etc/libvirt/qemu.conf', ...
    privileged: bool = False    # root with its capabilities: passes every directory


def conf_settings(text):
    """``{'user': ..., 'group': ...}`` from qemu.conf's text: the set values, else the defaults it ships.

    qemu.conf ships its build's defaults as commented lines (``#user = "libvirt-qemu"`` on
    Debian, ``#user = "qemu"`` on Fedora); examples are indented after the ``#``. Returns
    ``(settings, source)`` per key: ``{'user': ('libvirt-qemu', 'default')}``.
    """
    found = {}
    for key in ('user', 'group'):
        active = re.findall(r'^[ \t]*%s[ \t]*=[ \t]*"([^"]*)"' % key, text, re.M)
        shipped = re.findall(r'^#%s[ \t]*=[ \t]*"([^"]*)"' % key, text, re.M)
        if active:
            found[key] = (active[-1], 'set')
        elif shipped:
            found[key] = (shipped[-1], 'default')
    return found


def _user(value):
    """``(uid, name or None, primary gid)`` for qemu.conf's ``user`` value: a name, ``+N`` (a uid) or a number."""
    if value.startswith('+') and value[1:].isdigit():
        uid = int(value[1:])
        try:
            entry = pwd.getpwuid(uid)
            return uid, entry.pw_name, entry.pw_gid
        except KeyError:
            return uid, None, None
    try:
        entry = pwd.getpwnam(value)
    except KeyError:
        if not value.isdigit():
            raise InvalidInput("the user %s that /etc/libvirt/qemu.conf names for QEMU does not exist: fix qemu.conf "
                               "(nothing was written)" % value) from None
        return _user('+' + value)
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def _group(value):
    if value.startswith('+') and value[1:].isdigit():
        return int(value[1:])
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        if value.isdigit():
            return int(value)
        raise InvalidInput("the group %s that /etc/libvirt/qemu.conf names for QEMU does not exist: fix qemu.conf "
                           "(nothing was written)" % value) from None


def identity_from_conf(text, conf_path=QEMU_CONF):
    """QEMU's Identity for the qemu driver's system instance, from qemu.conf's ``text``."""
    settings = conf_settings(text)
    user, user_from = settings.get('user', (None, None))
    if user is None:
        user = next((name for name in FALLBACK_USERS if _exists(name)), 'root')
        user_from = 'fallback'
    uid, name, primary = _user(user)
    group, group_from = settings.get('group', (None, None))
    gid = _group(group) if group is not None else primary
    if gid is None:
        gid = 0
    groups = {gid}
    if name is not None:
        # as libvirt's virGetGroupList: the user's groups (from its passwd primary group), plus the configured one
        groups.update(os.getgrouplist(name, primary))
    where = {'set': 'as set in %s' % conf_path, 'default': 'the default that %s names' % conf_path,
             'fallback': 'libvirt\'s usual default'}
    sources = sorted({where[s] for s in (user_from, group_from or user_from)})
    label = '%s:%s (uid %d, gid %d)' % (name or uid, _group_name(gid), uid, gid)
    # libvirt clears QEMU's capabilities unless told not to: then even root obeys the mode bits
    keeps_caps = re.search(r'^[ \t]*clear_emulator_capabilities[ \t]*=[ \t]*0\b', text, re.M) is not None
    return Identity(uid=uid, gid=gid, groups=frozenset(groups), label=label, source=', '.join(sources),
                    privileged=uid == 0 and keeps_caps)


def _exists(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def qemu_identity(uri, conf_path=QEMU_CONF):
    """Who QEMU runs as for connection ``uri``; None when no QEMU runs under it here (other drivers)."""
    scheme = uri.split('://', 1)[0].partition('+')[0] if '://' in uri else ''
    if scheme != 'qemu':
        return None
    if urlsplit(uri).path.rstrip('/') == '/session':
        # QEMU runs as the user who connects: this module's user
        uid, gid = os.geteuid(), os.getegid()
        return Identity(uid=uid, gid=gid, groups=frozenset([gid] + os.getgroups()),
                        label='%s (uid %d)' % (_user_name(uid), uid), source='the user of qemu:///session',
                        privileged=uid == 0)
    try:
        with open(conf_path) as handle:
            text = handle.read()
    except OSError:
        text = ''
    return identity_from_conf(text, conf_path)


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def searchable(info, identity):
    """Whether ``identity`` may search (``x``) a directory with ``os.stat`` result ``info`` (its mode bits)."""
    if identity.privileged:
        return True
    if info.st_uid == identity.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in identity.groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blocking_dir(directory, identity):
    """The first directory from ``/`` down to ``directory`` (links resolved) that ``identity`` cannot search.

    ``(path, stat result)``, or None when all can be. A directory that does not exist yet
    is one the restore creates, mode ``CREATED_MODE``: searchable, and so is all below it.
    """
    path = os.path.realpath(directory)
    steps = ['/']
    for part in [p for p in path.split('/') if p]:
        steps.append(os.path.join(steps[-1], part))
    for step in steps:
        try:
            info = os.stat(step)
        except FileNotFoundError:
            return None
        if not searchable(info, identity):
            return step, info
    return None


def refuse_unreachable(uri, places):
    """Refuse a restore whose files QEMU could not reach: ``places`` is ``[(directory, what goes there)]``.

    Nothing has been written when this runs (check mode included).
    """
    identity = qemu_identity(uri)
    if identity is None:
        return
    for directory, what in places:
        blocked = blocking_dir(directory, identity)
        if blocked is None:
            continue
        path, info = blocked
        mode = stat.S_IMODE(info.st_mode)
        on_the_way = '' if path == os.path.realpath(directory) else ' on the way to %s' % directory
        raise InvalidInput('QEMU runs as %s, %s, and cannot enter %s (mode %04o, owner %s:%s)%s, so the restored '
                           'domain could not open %s and would not start: give that directory search permission '
                           '(chmod %04o %s, or 0755), or restore with disk_dir in a directory QEMU can reach '
                           '(nothing was written)'
                           % (identity.label, identity.source, path, mode, _user_name(info.st_uid),
                              _group_name(info.st_gid), on_the_way, what, mode | 0o011, path))


PLACE_NAMES = {'nvram': 'its NVRAM', 'memory': 'its memory file'}


def restore_places(manifest, dest):
    """``[(directory, what)]``: where a restore puts the files QEMU opens (disk images, NVRAM), from its plan.

    Not the TPM state: swtpm opens it, as its own user (qemu.conf's swtpm_user).
    """
    places = []
    for entry in manifest.files:
        if entry.role in DISK_ROLES or entry.role == 'nvram':
            what = PLACE_NAMES.get(entry.role, 'its disk image')
            places.append((os.path.dirname(dest[entry.name]), '%s %s' % (what, dest[entry.name])))
    return places
