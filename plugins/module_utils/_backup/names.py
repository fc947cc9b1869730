# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Backup names: ``<label>-<UUID tag>-<UTC stamp, ms>``, unique by construction, and the patterns that find them."""

from __future__ import annotations

import datetime
import os
import re

from .request import SUFFIXES

NAME_STAMP = '%Y%m%dT%H%M%S'
TAG_LENGTH = 8                      # hex digits of the domain UUID in a backup's name
PARTIAL = '.partial-'               # a backup being written: .<name><suffix>.partial-<hex>
SUMS_SUFFIX = '.sha256'             # beside a backup, its sha256sum file: <name><suffix>.sha256

NAME_PATTERN = re.compile(r'^(?P<label>.+)-(?P<tag>[0-9a-f]{%d})-(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z'
                          r'(?P<suffix>\.tar\.zst|\.tar)?$' % TAG_LENGTH)
OLD_NAME_PATTERN = re.compile(r'^(?P<label>.+)-(?P<stamp>\d{8}T\d{6})Z(?P<suffix>\.tar\.zst|\.tar)?$')


def safe_label(text):
    """``text`` reduced to characters that are safe and unambiguous in a file name."""
    label = re.sub(r'[^A-Za-z0-9._+-]', '_', text).lstrip('.')
    return label or '_'


def uuid_tag(uuid):
    """The first hex digits of a domain UUID: enough to tell a host's domains apart in a file name."""
    return uuid.replace('-', '').lower()[:TAG_LENGTH]


def utcnow_ms():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def backup_name(domain_name, when, uuid):
    """A backup's name; it sorts by time within one domain.

    ``<label>-<UUID tag>-<UTC stamp, ms>``, so ``web 1`` and ``web_1`` (both labelled
    ``web_1``) never share a name. Names written before (``<label>-<UTC stamp>``) are
    still recognised by listing (``OLD_NAME_PATTERN``).
    """
    return '%s-%s-%s.%03dZ' % (safe_label(domain_name), uuid_tag(uuid), when.strftime(NAME_STAMP),
                               when.microsecond // 1000)


def free_name(dest, domain_name, uuid, when, suffix):
    """A backup name not yet taken in ``dest``: the stamp moves on by a millisecond until it is free.

    Called under the domain's lock, so no other backup of this domain picks the same
    name meanwhile; other domains' names differ by their UUID tag.
    """
    while True:
        name = backup_name(domain_name, when, uuid)
        if not any(os.path.lexists(os.path.join(dest, name + other)) for other in set(SUFFIXES.values()) | {suffix}):
            return name, when
        when += datetime.timedelta(milliseconds=1)


def partial_pattern(domain_name, uuid=None):
    """Leftovers of a killed run: by label (names written before), or by UUID tag with ``uuid``."""
    if uuid is not None:
        return re.compile(r'^\..+-%s-\d{8}T\d{6}\.\d{3}Z(\.tar\.zst|\.tar)?(%s)?%s[0-9a-f]+$'
                          % (uuid_tag(uuid), re.escape(SUMS_SUFFIX), re.escape(PARTIAL)))
    return re.compile(r'^\.%s-\d{8}T\d{6}Z(\.tar\.zst|\.tar)?%s[0-9a-f]+$'
                      % (re.escape(safe_label(domain_name)), re.escape(PARTIAL)))


def candidate(entry_name, uuid):
    """``(time key, match)`` of a backup name that may be the domain with ``uuid``'s, else None.

    Names with this UUID's tag qualify, and every old-style name (its label may be another
    domain's, or this one's before a rename): the manifest decides.
    """
    match = NAME_PATTERN.match(entry_name)
    if match:
        return ((match.group('stamp'), match.group('ms')), match) if match.group('tag') == uuid_tag(uuid) else None
    match = OLD_NAME_PATTERN.match(entry_name)
    return ((match.group('stamp'), '000'), match) if match else None
