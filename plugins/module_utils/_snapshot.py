# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Snapshots of one domain as a model and a tree, and the facts vm_snapshot_info reports.

Private to kvm.snapshots: no stable API for other collections.

libvirt already keeps snapshots as a tree (each snapshot names its parent);
``SnapshotTree`` reads it once (one XML dump per snapshot) and answers every
question virsh's snapshot-list flags ask without going back to the daemon.
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import json
import os
import re
import time
import unicodedata

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    DomainNotFound,
    InvalidInput,
    KvmError,
    OperationFailed,
    SnapshotNotFound,
    all_domains,
    domain_state,
    etree,
    for_each,
    is_glob,
    is_local_uri,
    libvirt,
    lookup_domain,
    parse_xml,
    resolve_domains,
    translate,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import backup_overlays, domain_disks, is_uefi
from ansible_collections.kvm.snapshots.plugins.module_utils._qemu_img import qemu_img_info
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot_space import check_snapshot_space


class Snapshot:
    """One snapshot as its XML describes it."""

    __slots__ = ('name', 'description', 'state', 'parent', 'creation_epoch', 'memory', 'disks',
                 'xml', 'children', 'is_current', 'has_metadata')

    def __init__(self, xml, is_current=False, has_metadata=True):
        root = parse_xml(xml)
        self.xml = xml
        self.name = root.findtext('name')
        self.description = root.findtext('description') or ''
        self.state = root.findtext('state')
        # find() of a plain tag runs in C; a path ('parent/name') goes through lxml's Python
        # ElementPath: the difference is a tenth of the time of a domain with 1000 snapshots
        parent = root.find('parent')
        self.parent = parent.findtext('name') if parent is not None else None
        self.creation_epoch = int(root.findtext('creationTime') or 0)
        memory = root.find('memory')
        self.memory = memory.get('snapshot') if memory is not None else None
        disks = root.find('disks')
        self.disks = [dict(name=disk.get('name'), snapshot=disk.get('snapshot'))
                      for disk in (disks.iterchildren('disk') if disks is not None else ())]
        self.children = []
        self.is_current = is_current
        self.has_metadata = has_metadata

    @property
    def location(self):
        """``external`` when memory or any disk lives outside the image, as virsh snapshot-info says."""
        if self.state == 'disk-snapshot' or self.memory == 'external':
            return 'external'
        if any(disk['snapshot'] == 'external' for disk in self.disks):
            return 'external'
        return 'internal'

    @property
    def creation_time(self):
        """ISO 8601 in the host's time zone, with its offset."""
        return datetime.datetime.fromtimestamp(self.creation_epoch).astimezone().isoformat()


class SnapshotTree:
    """All snapshots of one domain, linked parent to children."""

    def __init__(self, snapshots):
        self.by_name = {snap.name: snap for snap in snapshots}
        self._counts = None
        for snap in snapshots:
            snap.children = []
        for snap in sorted(snapshots, key=lambda s: s.name):
            if snap.parent in self.by_name:
                self.by_name[snap.parent].children.append(snap.name)
            else:
                snap.parent = None  # parent deleted with metadata_only: libvirt shows it as a root too

    @classmethod
    def from_domain(cls, dom, secure=False):
        """Read every snapshot of ``dom`` with one listing call and one XML dump each.

        ``secure`` keeps passwords in the XML: for backups only, never for results.
        """
        xml_flags = libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE if secure else 0
        snaps = dom.listAllSnapshots(0)
        without_metadata = {s.getName() for s in dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_NO_METADATA)}
        current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
        # all the round trips first, back to back, then the parsing: measurably faster than interleaved
        xmls = [s.getXMLDesc(xml_flags) for s in snaps]
        return cls([Snapshot(xml,
                             is_current=(s.getName() == current),
                             has_metadata=s.getName() not in without_metadata) for s, xml in zip(snaps, xmls)])

    def __len__(self):
        return len(self.by_name)

    def __contains__(self, name):
        return name in self.by_name

    def get(self, name, domain_name=None):
        """The snapshot ``name``; ``SnapshotNotFound`` listing the ones there are."""
        try:
            return self.by_name[name]
        except KeyError:
            where = " of domain '%s'" % domain_name if domain_name else ''
            known = ', '.join(sorted(self.by_name)) or 'none'
            raise SnapshotNotFound("no snapshot '%s'%s (snapshots: %s)" % (name, where, known)) from None

    @property
    def current(self):
        return next((snap.name for snap in self.by_name.values() if snap.is_current), None)

    def roots(self):
        return sorted(name for name, snap in self.by_name.items() if snap.parent is None)

    def leaves(self):
        return sorted(name for name, snap in self.by_name.items() if not snap.children)

    def descendants(self, name):
        """Every snapshot below ``name``, parents before children."""
        order = []
        stack = list(reversed(self._ordered_children(name)))
        while stack:
            child = stack.pop()
            order.append(child)
            stack.extend(reversed(self._ordered_children(child)))
        return order

    def ancestors(self, name):
        """``name``'s parent, grandparent ... up to its root."""
        chain = []
        parent = self.by_name[name].parent
        while parent is not None:
            chain.append(parent)
            parent = self.by_name[parent].parent
        return chain

    def topological(self):
        """All names, no child before its parent; siblings oldest first, as they were taken."""
        order = []
        for root in sorted(self.roots(), key=self._age):
            order.append(root)
            order.extend(self.descendants(root))
        return order

    def _age(self, name):
        snap = self.by_name[name]
        return snap.creation_epoch, name

    def _ordered_children(self, name):
        return sorted(self.by_name[name].children, key=self._age)

    def render(self):
        """The tree as ``virsh snapshot-list --tree`` draws it (virsh's vshTreePrint, children by name).

        Iterative, not recursive: a chain of a thousand snapshots is a tree a thousand deep.
        """
        lines = []
        for root in self.roots():
            stack = [(root, root, True, '')]
            while stack:
                name, last_sibling, is_root, indent = stack.pop()
                children = self.by_name[name].children
                lines.append(indent + ('' if is_root else '+- ') + name)
                if not is_root:
                    indent += (' ' if name == last_sibling else '|') + ' '
                if children:
                    lines.append(indent + '  |')
                elif name == last_sibling:
                    lines.append(indent)
                stack.extend((child, children[-1], False, indent + '  ') for child in reversed(children))
        return '\n'.join(lines) + '\n' if lines else ''

    def rendered(self):
        """The text tree as returned to the user: ``tree`` (one string) and ``tree_lines`` (its lines, like
        ``stdout_lines``), so ``debug: var=`` shows it as virsh draws it."""
        return tree_text(self.render())

    def descendants_count(self, name):
        if self._counts is None:
            self._counts = {}
            for node in reversed(self.topological()):
                self._counts[node] = sum(1 + self._counts[child] for child in self.by_name[node].children)
        return self._counts[name]

    def facts(self, name):
        """What vm_snapshot_info reports for one snapshot."""
        snap = self.by_name[name]
        return dict(
            name=snap.name,
            description=snap.description,
            creation_time=snap.creation_time,
            creation_epoch=snap.creation_epoch,
            state=snap.state,
            location=snap.location,
            parent=snap.parent,
            children=list(snap.children),
            children_count=len(snap.children),
            descendants_count=self.descendants_count(name),
            is_current=snap.is_current,
            has_metadata=snap.has_metadata,
            disks=[dict(disk) for disk in snap.disks],
        )


def tree_text(text):
    """``tree`` and ``tree_lines`` for one rendered tree text."""
    return dict(tree=text, tree_lines=text.splitlines())


def select(tree, name=None, roots=False, leaves=False, descendants_of=None, location=None,
           snapshot_state=None, domain_name=None):
    """Names of the snapshots that pass every filter, in topological order (virsh's flags, combined with AND)."""
    names = tree.topological()
    if name is not None:
        tree.get(name, domain_name)
        names = [name]
    if descendants_of is not None:
        tree.get(descendants_of, domain_name)
        below = set(tree.descendants(descendants_of))
        names = [n for n in names if n in below]
    if roots:
        names = [n for n in names if tree.by_name[n].parent is None]
    if leaves:
        names = [n for n in names if not tree.by_name[n].children]
    if location is not None:
        names = [n for n in names if tree.by_name[n].location == location]
    if snapshot_state is not None:
        names = [n for n in names if tree.by_name[n].state == snapshot_state]
    return names


def disk_sizes(dom_xml):
    """Per disk of the domain: sizes and the internal snapshot table, from ``qemu-img info -U``."""
    sizes = []
    for disk in domain_disks(dom_xml):
        if disk['path'] is None or disk['type'] not in ('file', 'block'):
            continue
        info = qemu_img_info(disk['path'])
        sizes.append(dict(
            target=disk['target'],
            path=disk['path'],
            format=info.get('format'),
            virtual_size=info.get('virtual-size'),
            disk_size=info.get('actual-size'),
            snapshots={entry['name']: entry.get('vm-state-size', 0) for entry in info.get('snapshots', [])},
        ))
    return sizes


def domain_facts(dom, filters, sizes=False, xml=False, strict=True):
    """Everything vm_snapshot_info returns for one domain.

    ``strict``: an unknown ``name`` or ``descendants_of`` fails (one named domain);
    otherwise such a domain just reports no matching snapshot (bulk listing).
    """
    tree = SnapshotTree.from_domain(dom)
    try:
        names = select(tree, domain_name=dom.name(), **filters)
    except SnapshotNotFound:
        if strict:
            raise
        names = []
    disks = disk_sizes(_domain_xml(dom)) if sizes else None
    snapshots = []
    for name in names:
        entry = tree.facts(name)
        if disks is not None:
            # VM state lives in one image only (the first writable disk); sum so it is never missed.
            entry['vm_state_size'] = sum(d['snapshots'].get(name, 0) for d in disks)
            entry['disk_sizes'] = {d['target']: d['snapshots'].get(name) for d in disks}
        if xml:
            entry['xml'] = tree.by_name[name].xml
        snapshots.append(entry)
    facts = dict(
        exists=True,
        state=domain_state(dom),
        current_snapshot=tree.current,
        snapshot_count=len(tree),
        snapshots=snapshots,
        checkpoints=checkpoint_names(dom),
        backup_overlays=[dict(disk=target, path=path) for target, path in backup_overlays(dom)],
        **tree.rendered()
    )
    if disks is not None:
        facts['disks'] = [{k: v for k, v in d.items() if k != 'snapshots'} for d in disks]
    return facts


INFO_FILTERS = ('name', 'roots', 'leaves', 'descendants_of', 'location', 'snapshot_state')


MISSING_DOMAIN = ("domain '%s' not found on %s: it is reported with exists=false; check the name with "
                  "'virsh list --all', or drop it from the task")


OVERLAY_LEFT = ("domain '%s' has a live backup overlay on disk %s (%s): a backup is copying it, or one died "
                "before merging it back")


def _given_domains(conn, params):
    """``[(key, domain or None)]`` in the order ``domain``/``domains`` name them, missing ones in place.

    The key is the domain's name (a UUID given is looked up), or what was typed for a domain that
    does not exist. A glob stands for the domains it matches, by name; a domain named twice comes once.
    """
    if params['domain'] is not None:
        try:
            dom = lookup_domain(conn, params['domain'])
        except DomainNotFound:
            return [(params['domain'], None)]
        return [(dom.name(), dom)]
    if params['domains'] is None:
        return all_domains(conn)
    given, seen = [], set()
    for pattern in params['domains']:
        found, missing = resolve_domains(conn, [pattern])
        for key, dom in found + [(typed, None) for typed in missing]:
            ident = key if dom is None else dom.UUIDString()
            if ident not in seen:
                seen.add(ident)
                given.append((key, dom))
    return given


def gather_info(params):
    """vm_snapshot_info's whole result for its module parameters.

    ``domains`` is keyed by each domain's name (a UUID given is looked up), in the order
    ``domain``/``domains`` name them (a glob's matches by name; every domain by name when
    neither is given); a missing domain is keyed as typed, with ``exists: false``, and warned about.
    """
    filters = {key: params[key] for key in INFO_FILTERS}
    with Connection(params['uri']) as conn:
        given = _given_domains(conn, params)
        strict = params['domain'] is not None
        outcomes = for_each([(key, dom) for key, dom in given if dom is not None], lambda _key, dom: domain_facts(
            dom, filters, sizes=params['sizes'], xml=params['xml'], strict=strict))
    facts_of = {}
    for label, facts, error in outcomes:
        if error is not None:
            raise error
        facts_of[label] = facts
    domains, warnings = {}, []
    for key, dom in given:
        if dom is not None:
            domains[key] = facts_of[key]
            warnings += [OVERLAY_LEFT % (key, overlay['disk'], overlay['path']) + ' (the next vm_backup of the '
                         'domain merges it)' for overlay in facts_of[key]['backup_overlays']]
        else:
            warnings.append(MISSING_DOMAIN % (shown(key), params['uri']))
            domains[key] = dict(exists=False, state=None, current_snapshot=None, snapshot_count=0, snapshots=[],
                                checkpoints=[], backup_overlays=[], **tree_text(''))
    result = dict(
        changed=False,
        domains=domains,
        with_snapshots=sorted(n for n, f in domains.items() if f['snapshot_count']),
        without_snapshots=sorted(n for n, f in domains.items() if f['exists'] and not f['snapshot_count']),
    )
    if warnings:
        result['warnings'] = warnings
    return result


# ---------------------------------------------------------------------------
# Operations: what vm_snapshot does.
#
# Every input is checked first, before any connection is opened. Then, per
# domain, the tree is read once and the change is worked out on it: in check
# mode the tree after the change is predicted (the same rules libvirt applies:
# children move up to the parent of a deleted snapshot, the current one moves
# to the nearest survivor); otherwise libvirt does it and the tree is read
# again, so what is reported is what libvirt holds.
# ---------------------------------------------------------------------------

SNAPSHOT_STATES = ('present', 'absent', 'reverted', 'current', 'pruned')

# Options that mean something for some states only. Set to anything but their
# default with another state they are refused, never silently ignored.
STATE_OPTIONS = dict(
    description=('present',),
    parent=('present',),
    disk_only=('present',),
    quiesce=('present',),
    halt=('present',),
    live=('present',),
    atomic=('present',),
    all=('absent',),
    children=('absent',),
    children_only=('absent',),
    metadata_only=('absent',),
    after_revert=('reverted',),
    force=('reverted',),
    reset_nvram=('reverted',),
    keep=('present', 'pruned'),
    pattern=('present', 'pruned', 'absent'),
    older_than=('present', 'pruned'),
)

NAME_MAX = 255
KEEP_REFUSED = ('keep is %d: it must be 1 or more (how many of the newest snapshots stay); omit keep to keep them '
                'all, or use state=absent with all=true to delete every snapshot')
AGE_UNITS = dict(s=1, m=60, h=3600, d=86400, w=604800)
AGE_FORMAT = re.compile(r'(?:[0-9]+[smhdw])+')
AGE_PART = re.compile(r'([0-9]+)([smhdw])')

CREATE_FLAGS = (
    ('disk_only', 'VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY'),
    ('quiesce', 'VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE'),
    ('halt', 'VIR_DOMAIN_SNAPSHOT_CREATE_HALT'),
    ('live', 'VIR_DOMAIN_SNAPSHOT_CREATE_LIVE'),
    ('atomic', 'VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC'),
)
RESET_NVRAM_FLAG = 'VIR_DOMAIN_SNAPSHOT_REVERT_RESET_NVRAM'


def shown(text, limit=60):
    """``text`` as it can stand in a one-line message: control characters escaped, long text cut."""
    text = ''.join(ch if ch == ' ' or ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    return text if len(text) <= limit else text[:limit] + '...'


def _check_length(name, option):
    if name is None or name == '':
        raise InvalidInput('%s is empty: give the snapshot a name' % option)
    if len(name) > NAME_MAX:
        raise InvalidInput('%s is %d characters long: a snapshot name has at most %d' % (option, len(name), NAME_MAX))


def check_existing_name(name, option='name'):
    """Refuse only a name no snapshot can have: empty, too long, or with a character XML cannot carry.

    For the states that work on an existing snapshot, which may have any name libvirt accepts
    (one made with virsh can hold white space, for example); ``check_name`` is for new ones.
    """
    _check_length(name, option)
    if any((ch < ' ' and ch not in '\t\n\r') or unicodedata.category(ch) == 'Cs' for ch in name):
        raise InvalidInput("%s '%s' holds a control character that snapshot XML cannot carry, so no snapshot has "
                           "that name: check it with 'virsh snapshot-list --name'" % (option, shown(name)))
    return name


def check_name(name, option='name'):
    """Refuse a new snapshot name that libvirt, virsh or qemu-img would choke on, or mangle."""
    _check_length(name, option)
    if any(ch.isspace() for ch in name):
        raise InvalidInput("%s '%s' holds white space: use '-' or '_' instead (virsh and qemu-img take a snapshot "
                           "name as one word)" % (option, shown(name)))
    if any(unicodedata.category(ch) in ('Cc', 'Cf', 'Cs', 'Co', 'Cn') for ch in name):
        raise InvalidInput("%s '%s' holds a control or unassigned character: use letters, digits, '-', '_' and '.'"
                           % (option, shown(name)))
    if '/' in name:
        raise InvalidInput("%s '%s' holds '/': libvirt keeps snapshot metadata in a file named after the snapshot; "
                           "use '-' instead" % (option, shown(name)))
    if name[0] == '-':
        raise InvalidInput("%s '%s' starts with '-', which virsh and qemu-img would read as an option: start it with "
                           "a letter or digit" % (option, shown(name)))
    if name[0] == '.':
        raise InvalidInput("%s '%s' starts with '.', which makes a hidden metadata file: start it with a letter or "
                           "digit" % (option, shown(name)))
    return name


def parse_age(text):
    """``30m``, ``12h``, ``7d``, ``2w``, ``1d12h`` ... as seconds."""
    value = str(text).strip()
    if not AGE_FORMAT.fullmatch(value):
        raise InvalidInput("older_than '%s' is not a duration: write a number and a unit (s, m, h, d or w), "
                           "like 30m, 12h, 7d or 1d12h" % shown(value))
    return sum(int(number) * AGE_UNITS[unit] for number, unit in AGE_PART.findall(value))


def _given(params, defaults, option):
    return params.get(option) != defaults.get(option)


def validate(params, defaults):
    """Refuse, with one line naming the way out, every input that cannot work. Touches nothing.

    ``defaults`` are the argument spec's defaults: an option of another state is
    refused when set to anything else.
    """
    state = params['state']
    for option, states in STATE_OPTIONS.items():
        if state not in states and _given(params, defaults, option):
            raise InvalidInput('%s applies to state=%s only, not to state=%s: remove it from the task'
                               % (option, ' or '.join(states), state))
    if params.get('domain') is not None and not params['domain']:
        raise InvalidInput('domain is empty: name a domain (or a UUID)')
    if params.get('domains') is not None:
        if not params['domains']:
            raise InvalidInput("domains is empty: list domain names or globs, like ['web-*']")
        if not all(params['domains']):
            raise InvalidInput('domains holds an empty name: remove it')
    if state == 'pruned':
        if params['name'] is not None:
            raise InvalidInput('name does not apply to state=pruned, which picks snapshots by pattern, keep and '
                               'older_than: remove it, or use state=absent to delete one snapshot')
        if params['keep'] is None and params['older_than'] is None:
            raise InvalidInput('state=pruned needs keep, older_than or both: say which snapshots to keep')
    elif state == 'absent' and params.get('all'):
        _validate_absent_all(params)
    else:
        if params['name'] is None:
            raise InvalidInput('name is required with state=%s' % state)
        # strict for a new snapshot only: the other states must reach any snapshot libvirt holds
        (check_name if state == 'present' else check_existing_name)(params['name'])
    if params.get('parent') is not None:
        check_name(params['parent'], 'parent')
        if params['parent'] == params['name']:
            raise InvalidInput("parent '%s' is the snapshot itself: name an existing snapshot" % shown(params['parent']))
    description = params.get('description')
    if description is not None and any(unicodedata.category(ch) == 'Cc' and ch not in '\t\n\r' for ch in description):
        raise InvalidInput('description holds a control character that snapshot XML cannot carry: remove it')
    if params.get('keep') is not None and params['keep'] < 1:
        raise InvalidInput(KEEP_REFUSED % params['keep'])
    if params.get('older_than') is not None:
        parse_age(params['older_than'])
    if params.get('pattern') is not None and params['pattern'] == '':
        raise InvalidInput("pattern is empty: use '*' for every snapshot")
    if state == 'present':
        _validate_present(params, defaults)
    if state == 'absent' and not params.get('all') and _given(params, defaults, 'pattern'):
        raise InvalidInput('pattern applies to state=absent with all=true only: remove it to delete the one snapshot '
                           'name gives, or drop name and set all=true to delete every snapshot matching pattern')
    if state == 'absent' and params['children'] and params['children_only']:
        raise InvalidInput('children and children_only exclude each other: children deletes the snapshot and all '
                           'below it, children_only only what is below it')
    if state == 'reverted' and params['reset_nvram'] and not hasattr(libvirt, RESET_NVRAM_FLAG):
        raise InvalidInput('reset_nvram needs libvirt-python 8.1 or later (it has no %s): upgrade libvirt-python, '
                           'or leave reset_nvram off' % RESET_NVRAM_FLAG)


def _validate_absent_all(params):
    if params['name'] is not None:
        raise InvalidInput("name and all=true exclude each other: all deletes every snapshot (that matches pattern); "
                           "remove name, or remove all to delete only snapshot '%s'" % shown(params['name']))
    for option in ('children', 'children_only'):
        if params[option]:
            raise InvalidInput('%s does not go with all=true, which deletes every snapshot (that matches pattern) '
                               'whatever its place in the tree: remove %s' % (option, option))


def _validate_present(params, defaults):
    pruning = params['keep'] is not None or params['older_than'] is not None
    if _given(params, defaults, 'pattern') and not pruning:
        raise InvalidInput('pattern needs keep or older_than: it only picks the snapshots to prune after creating')
    if params['quiesce'] and not params['disk_only']:
        raise InvalidInput('quiesce needs disk_only=true: QEMU freezes guest file systems (through the guest agent) '
                           'for disk-only snapshots only')
    if params['live'] and params['disk_only']:
        raise InvalidInput('live and disk_only exclude each other: live is for snapshots with memory state')


def prune_selection(tree, keep=None, pattern='*', older_than=None, now=None):
    """Names ``pruned`` deletes, oldest first.

    Of the snapshots whose name matches ``pattern``, the ``keep`` newest stay;
    with ``older_than`` (seconds) only the rest older than that go. Age is the
    creation time; snapshots taken within the same second are ordered by their
    place in the tree (a child is newer than its parent).
    """
    position = {name: index for index, name in enumerate(tree.topological())}
    matching = [name for name in tree.by_name if fnmatch.fnmatchcase(name, pattern or '*')]
    newest_first = sorted(matching, key=lambda n: (tree.by_name[n].creation_epoch, position[n]), reverse=True)
    doomed = newest_first[keep:] if keep is not None else newest_first
    if older_than is not None:
        cutoff = (time.time() if now is None else now) - older_than
        doomed = [name for name in doomed if tree.by_name[name].creation_epoch < cutoff]
    return list(reversed(doomed))


# ---- predicting a tree (check mode), by libvirt's rules ----

def _cloned(tree):
    clones = []
    for snap in tree.by_name.values():
        clone = copy.copy(snap)
        clone.children = []
        clones.append(clone)
    return clones


def _with_current(snaps, name):
    for snap in snaps:
        snap.is_current = snap.name == name
    return snaps


def predict_create(tree, name, description, state, disks, memory, parent=None, now=None):
    """The tree once ``name`` is taken: a child of ``parent`` (or of the current snapshot), and current."""
    root = etree.Element('domainsnapshot')
    etree.SubElement(root, 'name').text = name
    if description:
        etree.SubElement(root, 'description').text = description
    etree.SubElement(root, 'state').text = state
    parent = parent or tree.current
    if parent is not None:
        etree.SubElement(etree.SubElement(root, 'parent'), 'name').text = parent
    etree.SubElement(root, 'creationTime').text = str(int(time.time() if now is None else now))
    etree.SubElement(root, 'memory', snapshot=memory)
    disks_node = etree.SubElement(root, 'disks')
    for disk_name, kind in disks:
        etree.SubElement(disks_node, 'disk', name=disk_name, snapshot=kind)
    new = Snapshot(etree.tostring(root, encoding='unicode'), is_current=True)
    return SnapshotTree(_with_current(_cloned(tree), None) + [new])


def predict_delete(tree, name, children=False, children_only=False):
    """``(tree after, names deleted)`` for deleting ``name`` as libvirt does it.

    Plain delete: its children move up to its parent. ``children``: it and all
    below go. ``children_only``: only what is below goes. A deleted current
    snapshot hands "current" to the deleted one's parent (to ``name`` itself
    with ``children_only``).
    """
    below = tree.descendants(name)
    if children_only:
        doomed = below
    elif children:
        doomed = [name] + below
    else:
        doomed = [name]
    gone = set(doomed)
    parent = tree.by_name[name].parent
    survivors = [snap for snap in _cloned(tree) if snap.name not in gone]
    for snap in survivors:
        if snap.parent in gone:
            snap.parent = parent
    if tree.current in gone:
        _with_current(survivors, name if children_only else parent)
    return SnapshotTree(survivors), doomed


def predict_current(tree, name):
    return SnapshotTree(_with_current(_cloned(tree), name))


def predict_description(tree, name, description):
    snaps = _cloned(tree)
    for snap in snaps:
        if snap.name == name:
            snap.description = description
    return SnapshotTree(snaps)


# ---- the libvirt side ----

def _secure_xml(snapshot):
    return snapshot.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)


def _failure(exc, what, hint=None):
    """A ``KvmError`` for ``exc`` with ``what`` in front and, when we know one, the way out behind."""
    error = translate(exc, what)
    if hint:
        error = type(error)('%s - %s' % (error, hint), **error.result)
    return error


def _missing_snapshot(exc):
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT


def snapshot_exists(dom, name):
    try:
        dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if _missing_snapshot(exc):
            return False
        raise
    return True


def redefine_snapshot(dom, xml, current):
    """Define a snapshot from its XML (metadata only), as the current one when ``current``."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    dom.snapshotCreateXML(xml, flags)


def set_current(dom, name):
    """Make ``name`` current without reverting, as ``virsh snapshot-current DOMAIN NAME`` does."""
    redefine_snapshot(dom, _secure_xml(dom.snapshotLookupByName(name, 0)), current=True)


def set_description(dom, name, description, is_current):
    """Change a snapshot's description in place, as ``virsh snapshot-edit`` does (redefine the edited XML)."""
    root = parse_xml(_secure_xml(dom.snapshotLookupByName(name, 0)))
    node = root.find('description')
    if node is None:
        node = etree.Element('description')
        root.find('name').addnext(node)
    if description:
        node.text = description
    else:
        root.remove(node)
    redefine_snapshot(dom, etree.tostring(root, encoding='unicode'), is_current)


def _domain_xml(dom):
    return parse_xml(dom.XMLDesc(0))


def refuse_running_uefi(dom, label, params):
    """QEMU cannot put an active UEFI domain's state in an internal snapshot: say so before libvirt does."""
    if params['disk_only'] or not dom.isActive():
        return
    if is_uefi(_domain_xml(dom)):
        raise InvalidInput("domain '%s' is %s with UEFI (pflash) firmware, and QEMU cannot take an internal "
                           "snapshot of an active UEFI domain: shut the domain down first, or set disk_only=true "
                           "for an external disk-only snapshot" % (label, domain_state(dom)))


def raw_disks(domain_xml):
    """The disks that would go into an internal snapshot but are not qcow2 (raw images hold no snapshots)."""
    found = []
    for disk in domain_xml.iterfind('devices/disk'):
        if disk.get('device', 'disk') not in ('disk', 'lun') or disk.get('snapshot') in ('no', 'external'):
            continue
        driver = disk.find('driver')
        if driver is not None and driver.get('type') == 'raw':
            source = disk.find('source')
            path = source.get('file') or source.get('dev') if source is not None else None
            found.append('%s (%s)' % (disk.find('target').get('dev'), path) if path else disk.find('target').get('dev'))
    return found


def refuse_raw_disks(dom, label, params):
    """libvirt checks for raw disks only once it is under way; refuse first, so check mode tells the truth."""
    if params['disk_only']:
        return
    raw = raw_disks(_domain_xml(dom))
    if raw:
        many = len(raw) > 1
        raise InvalidInput("cannot create snapshot '%s' of domain '%s': %s %s %s, which cannot hold an internal "
                           "snapshot: set disk_only=true for an external snapshot, or convert %s to qcow2 (qemu-img "
                           "convert -O qcow2, with the domain shut off) and point the domain at %s"
                           % (params['name'], label, 'disks' if many else 'disk', ', '.join(raw),
                              'are raw images' if many else 'is a raw image', 'them' if many else 'the disk',
                              'them' if many else 'it'))


# ---- images shared through backing files, and checkpoints beside snapshots ----

def _is_local(dom):
    """qemu-img runs where the module runs: it can read the images only when libvirt runs here too."""
    return is_local_uri(dom.connect().getURI())


def _image_paths(domain_xml):
    return {disk['target']: disk['path'] for disk in domain_disks(domain_xml)
            if disk['path'] is not None and disk['type'] == 'file'}


def _read_image(path, unread, check, backing_chain=False):
    """``qemu-img info`` of ``path``, or None when it cannot be read: noted in ``unread``, since a check was skipped."""
    try:
        return qemu_img_info(path, backing_chain=backing_chain)
    except OperationFailed as exc:
        if str(exc).startswith('qemu-img not found'):
            raise
        unread.append('image %s could not be read (%s), so it was not checked for %s' % (path, exc, check))
        return None


def _chain(path, unread):
    """``[(image, info)]`` from ``path`` down its backing chain; [] when it cannot be read here."""
    if not os.path.exists(path):
        return []
    infos = _read_image(path, unread, 'images that use it as backing file', backing_chain=True)
    return [(os.path.realpath(info.get('filename', path)), info) for info in infos or []]


def image_users(dom, tree):
    """Every image libvirt knows for ``dom``, and who uses it: ``{path: [what, ...]}``.

    libvirt's view: the domain's disks now (live and persistent definition), each
    snapshot's definition, and each external snapshot's overlay.
    """
    users = {}

    def note(path, what):
        users.setdefault(os.path.realpath(path), [])
        if what not in users[os.path.realpath(path)]:
            users[os.path.realpath(path)].append(what)

    flags = (0, libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isActive() else (0,)
    for flag in flags:
        for target, path in _image_paths(parse_xml(dom.XMLDesc(flag))).items():
            note(path, "the domain's disk %s" % target)
    for name in tree.topological():
        root = parse_xml(tree.by_name[name].xml)
        for disk in root.iterfind('disks/disk'):
            source = disk.find('source')
            if disk.get('snapshot') == 'external' and source is not None and source.get('file'):
                note(source.get('file'), "external snapshot '%s'" % name)
        embedded = root.find('domain')
        if embedded is not None:
            for path in _image_paths(embedded).values():
                users.setdefault(os.path.realpath(path), [])
    return users


def backing_dependants(chains):
    """``{image: [images that read through it]}`` from backing chains (each a list, top image first)."""
    dependants = {}
    for chain in chains:
        for index, image in enumerate(chain):
            for above in chain[:index]:
                if above not in dependants.setdefault(image, []):
                    dependants[image].append(above)
    return dependants


def reverted_images(snapshot):
    """The images a revert to ``snapshot`` rewinds: its internal disks, in the definition it recorded."""
    root = parse_xml(snapshot.xml)
    embedded = root.find('domain')
    if embedded is None:
        return []
    kinds = {disk.get('name'): disk.get('snapshot') for disk in root.iterfind('disks/disk')}
    return [path for target, path in _image_paths(embedded).items() if kinds.get(target, 'internal') == 'internal']


def refuse_rewinding_backing_files(dom, label, tree, name, unread):
    """A revert to an internal snapshot rewinds its image's active data; an overlay on it would read garbage.

    Images it cannot read are noted in ``unread`` (the run goes on, and warns).
    """
    rewound = [os.path.realpath(path) for path in reverted_images(tree.by_name[name])]
    if not rewound:
        return
    users = image_users(dom, tree)
    chains, infos = [], {}
    for top in users:
        if top in infos:
            continue  # read already, below an overlay
        chain = _chain(top, unread)
        chains.append([image for image, _info in chain])
        infos.update(chain)
    dependants = backing_dependants(chains)
    for image in rewound:
        above = dependants.get(image)
        if not above:
            continue
        described = []
        for path in above:
            what = list(users.get(path, []))
            inside = [entry['name'] for entry in infos.get(path, {}).get('snapshots', [])]
            if inside:
                what.append('internal snapshots %s' % ', '.join(inside))
            described.append('%s (%s)' % (path, '; '.join(what)) if what else path)
        # Only an external snapshot is something to delete: the domain's own disk never is.
        external = [what for path in above for what in users.get(path, []) if what.startswith('external snapshot ')]
        way_out = ('merge %s %s into %s (virsh blockcommit while the domain runs, qemu-img commit while it is shut '
                   'off)' % ('the overlays' if len(above) > 1 else 'the overlay', ', '.join(above), image))
        if external:
            way_out += ', or delete %s first (vm_snapshot state=absent)' % ' and '.join(external)
        raise InvalidInput("cannot revert domain '%s' to snapshot '%s': it would rewind image %s, the backing file of "
                           "%s, and silently corrupt what reads through it: %s"
                           % (label, name, image, ', '.join(described), way_out))


def checkpoint_names(dom):
    """The domain's libvirt checkpoints, parents first; [] where the driver or libvirt-python has none."""
    list_all = getattr(dom, 'listAllCheckpoints', None)
    topological = getattr(libvirt, 'VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL', None)
    if list_all is None or topological is None:
        return []   # libvirt-python before 5.6 knows no checkpoints
    try:
        found = list_all(topological)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            return []
        raise
    return [checkpoint.getName() for checkpoint in found]


def image_bitmaps(path, unread):
    """Names of the persistent dirty bitmaps in a qcow2 image (what incremental backup tools leave)."""
    if not os.path.exists(path):
        return []
    info = _read_image(path, unread, 'dirty bitmaps') or {}
    data = (info.get('format-specific') or {}).get('data') or {}
    return [bitmap.get('name') for bitmap in data.get('bitmaps') or []]


CHECKPOINT_WAY_OUT = ("they belong to an incremental backup tool (virtnbdbackup, libvirt's backup API), and deleting "
                      "them (virsh checkpoint-delete %s NAME while it runs, or with --metadata plus qemu-img bitmap "
                      "--remove IMAGE NAME while it is shut off) breaks that tool's incremental chain, so it is your "
                      "decision; then run the task again")

BITMAP_WAY_OUT = ("they belong to an incremental backup tool (virtnbdbackup, libvirt's backup API), and removing "
                  "them (qemu-img bitmap --remove IMAGE NAME while the domain is shut off) breaks that tool's "
                  "incremental chain, so it is your decision; then run the task again")


def refuse_beside_checkpoints(dom, label, what, images=(), offline_only=False, unread=None):
    """QEMU loads no internal snapshot into an image with dirty bitmaps ("Device has active dirty bitmaps"),
    killing a running guest on the way; libvirt takes no snapshot of a shut-off domain with checkpoints."""
    if offline_only and dom.isActive():
        return
    checkpoints = checkpoint_names(dom)
    bitmaps = []
    if images:
        for path in images:
            names = image_bitmaps(path, unread)
            if names:
                bitmaps.append('bitmap %s in image %s' % (', '.join(names), path))
    if not checkpoints and not bitmaps:
        return
    found = (["checkpoint %s of domain '%s'" % (', '.join(checkpoints), label)] if checkpoints else []) + bitmaps
    why = ('libvirt changes no snapshot of a shut-off domain that has checkpoints ("cannot perform block operations '
           'while checkpoint exists"; while the domain runs, it does)' if offline_only else 'QEMU cannot load an internal snapshot into an image with dirty '
           'bitmaps, and the failed revert would stop the domain')
    way_out = CHECKPOINT_WAY_OUT % label if checkpoints else BITMAP_WAY_OUT
    raise InvalidInput('cannot %s beside %s: %s; %s' % (what, '; '.join(found), why, way_out))


CREATE_HINTS = (
    ('guest agent', 'quiesce needs the QEMU guest agent running in the guest; drop quiesce or set the agent up'),
    ('live snapshot creation is supported only', 'QEMU takes live snapshots only with an external memory image, '
     'which this module does not make: drop live'),
    ('unsupported for storage type raw', 'internal snapshots need qcow2 disks: convert the disk to qcow2, '
     'or set disk_only=true'),
    ('pflash', 'shut the domain down first, or set disk_only=true'),
)


def create_snapshot(dom, label, tree, params):
    """Take snapshot ``params['name']``; False when another run took it at the same moment."""
    name = params['name']
    root = etree.Element('domainsnapshot')
    etree.SubElement(root, 'name').text = name
    if params['description']:
        etree.SubElement(root, 'description').text = params['description']
    flags = 0
    for option, flag in CREATE_FLAGS:
        if params[option]:
            flags |= getattr(libvirt, flag)
    previous = tree.current
    moved = params['parent'] is not None and params['parent'] != previous
    try:
        if moved:
            set_current(dom, params['parent'])
        dom.snapshotCreateXML(etree.tostring(root, encoding='unicode'), flags)
    except libvirt.libvirtError as exc:
        if snapshot_exists(dom, name):
            return False  # "already exists": a concurrent run made it, which is what was asked for
        if moved and previous is not None:
            try:
                set_current(dom, previous)
            except libvirt.libvirtError:
                pass  # the creation error below is the one worth reporting
        text = str(exc)
        hint = next((advice for marker, advice in CREATE_HINTS if marker in text), None)
        raise _failure(exc, "cannot create snapshot '%s' of domain '%s'" % (name, label), hint) from None
    return True


def delete_snapshot(dom, label, name, flags=0):
    """Delete one snapshot; False when it was already gone (a concurrent run deleted it)."""
    try:
        dom.snapshotLookupByName(name, 0).delete(flags)
    except libvirt.libvirtError as exc:
        if _missing_snapshot(exc):
            return False
        raise _failure(exc, "cannot delete snapshot '%s' of domain '%s'" % (name, label)) from None
    return True


def revert_snapshot(dom, label, name, params):
    flags = 0
    if params['after_revert'] == 'running':
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
    elif params['after_revert'] == 'paused':
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
    if params['force']:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
    if params['reset_nvram']:
        flags |= getattr(libvirt, RESET_NVRAM_FLAG)
    was_active = dom.isActive()
    try:
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), flags)
    except libvirt.libvirtError as exc:
        hint = None
        restarted = _start_again(dom) if was_active else None
        if exc.get_error_code() == libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY:
            hint = 'set force=true to revert anyway'
        elif 'unsupported flags' in str(exc) and params['reset_nvram']:
            hint = 'this libvirt daemon cannot reset the NVRAM on revert: upgrade libvirt, or leave reset_nvram off'
        elif 'external' in str(exc):
            hint = 'this libvirt cannot revert to an external (disk_only) snapshot; libvirt 9.9 and later can'
        if restarted:
            hint = (hint + '; ' if hint else '') + restarted
        raise _failure(exc, "cannot revert domain '%s' to snapshot '%s'" % (label, name), hint) from None


def _start_again(dom):
    """A failed revert can leave a guest that was running shut off: start it again and say so."""
    try:
        if dom.isActive():
            return None
        dom.create()
    except libvirt.libvirtError as exc:
        return 'the failed revert stopped the domain and starting it again failed too (%s): start it by hand' % exc
    return 'the failed revert stopped the domain, which was started again (booted afresh from its current disks)'


# ---- one domain, one state ----

def _new_snapshot_shape(dom, params):
    """What a new snapshot will record: ``(state, disks, memory)``, for check mode."""
    disks = [disk['target'] for disk in domain_disks(_domain_xml(dom))]
    if params['disk_only']:
        return 'disk-snapshot', [(disk, 'external') for disk in disks], 'no'
    state = domain_state(dom)
    if state in ('running', 'blocked'):
        return 'running', [(disk, 'internal') for disk in disks], 'internal'
    if state == 'paused':
        return 'paused', [(disk, 'internal') for disk in disks], 'internal'
    return 'shutoff', [(disk, 'internal') for disk in disks], 'no'


def _delete_each(dom, label, tree, names, check_mode, flags=0):
    """Delete ``names`` one by one (children move up); ``(tree after, names deleted)``."""
    deleted = []
    for name in names:
        if name not in tree:
            continue
        if check_mode:
            tree = predict_delete(tree, name)[0]
            deleted.append(name)
        elif delete_snapshot(dom, label, name, flags):
            deleted.append(name)
    if deleted and not check_mode:
        tree = SnapshotTree.from_domain(dom)
    return tree, deleted


def _prune(dom, label, tree, params, check_mode):
    older_than = parse_age(params['older_than']) if params['older_than'] is not None else None
    doomed = prune_selection(tree, params['keep'], params['pattern'], older_than)
    return _delete_each(dom, label, tree, doomed, check_mode)


def _present(dom, label, tree, params, check_mode):
    name = params['name']
    changed = False
    if name in tree:
        description = params['description']
        if description is not None and tree.by_name[name].description != description:
            changed = True
            refuse_beside_checkpoints(dom, label, "change the description of snapshot '%s' of domain '%s' while it "
                                      "is shut off" % (name, label), offline_only=True)
            if check_mode:
                tree = predict_description(tree, name, description)
            else:
                set_description(dom, name, description, tree.by_name[name].is_current)
                tree = SnapshotTree.from_domain(dom)
    else:
        if params['parent'] is not None:
            tree.get(params['parent'], label)
        refuse_running_uefi(dom, label, params)
        refuse_raw_disks(dom, label, params)
        check_snapshot_space(dom, label, params)
        refuse_beside_checkpoints(dom, label, "create snapshot '%s' of domain '%s' while it is shut off"
                                  % (name, label), offline_only=True)
        if check_mode:
            state, disks, memory = _new_snapshot_shape(dom, params)
            tree = predict_create(tree, name, params['description'], state, disks, memory, parent=params['parent'])
            changed = True
        else:
            changed = create_snapshot(dom, label, tree, params)
            tree = SnapshotTree.from_domain(dom)
    deleted = None
    if params['keep'] is not None or params['older_than'] is not None:
        tree, deleted = _prune(dom, label, tree, params, check_mode)
        changed = changed or bool(deleted)
    return tree, changed, deleted


def _absent_all(dom, label, tree, params, check_mode):
    """state=absent, all=true: every snapshot (that matches ``pattern``), oldest first."""
    doomed = prune_selection(tree, None, params['pattern'])
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if params['metadata_only'] else 0
    tree, deleted = _delete_each(dom, label, tree, doomed, check_mode, flags)
    return tree, bool(deleted), deleted


def _absent(dom, label, tree, params, check_mode):
    if params.get('all'):
        return _absent_all(dom, label, tree, params, check_mode)
    name = params['name']
    if name not in tree:
        return tree, False, []
    predicted, doomed = predict_delete(tree, name, params['children'], params['children_only'])
    if not doomed:
        return tree, False, []
    if check_mode:
        return predicted, True, doomed
    flags = 0
    if params['children']:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN
    if params['children_only']:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY
    if params['metadata_only']:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
    if not delete_snapshot(dom, label, name, flags):
        return SnapshotTree.from_domain(dom), False, []
    return SnapshotTree.from_domain(dom), True, doomed


def _reverted(dom, label, tree, params, check_mode, warnings):
    snapshot = tree.get(params['name'], label)
    # qemu-img runs here: the images can be checked only when libvirt runs here too.
    local = _is_local(dom)
    images = sorted(set(reverted_images(snapshot)) | set(_image_paths(_domain_xml(dom)).values())) if local else ()
    unread = []
    refuse_beside_checkpoints(dom, label, "revert domain '%s' to snapshot '%s'" % (label, params['name']), images,
                              unread=unread)
    if local:
        refuse_rewinding_backing_files(dom, label, tree, params['name'], unread)
    else:
        warnings.append(REMOTE_UNCHECKED % (label, dom.connect().getURI()))
    warnings.extend("domain '%s': %s" % (label, text) for text in unread)
    if check_mode:
        return predict_current(tree, params['name']), True, None
    revert_snapshot(dom, label, params['name'], params)
    return SnapshotTree.from_domain(dom), True, None


def _current(dom, label, tree, params, check_mode):
    name = params['name']
    tree.get(name, label)
    if tree.current == name:
        return tree, False, None
    refuse_beside_checkpoints(dom, label, "make snapshot '%s' of domain '%s' current while it is shut off"
                              % (name, label), offline_only=True)
    if check_mode:
        return predict_current(tree, name), True, None
    set_current(dom, name)
    return SnapshotTree.from_domain(dom), True, None


def _pruned(dom, label, tree, params, check_mode):
    tree, deleted = _prune(dom, label, tree, params, check_mode)
    return tree, bool(deleted), deleted


NVRAM_NOT_RESET = ("reset_nvram: domain '%s' stays shut off after the revert to snapshot '%s', and libvirt resets "
                   "the NVRAM only when the revert starts the domain: set after_revert=running or paused to reset it")

REMOTE_UNCHECKED = ("domain '%s': the images behind %s are not readable here, so the revert was not checked for "
                    "images that use them as backing file or for dirty bitmaps: run the module on the hypervisor "
                    "for those checks")

STATE_HANDLERS = dict(present=_present, absent=_absent, reverted=_reverted, current=_current, pruned=_pruned)


# virsh domstate's words for the states domain_state() names as virsh list's filters do
DOMSTATE_WORDS = dict(nostate='no state', blocked='idle', shutdown='in shutdown', shutoff='shut off')


def predict_domain_state(snapshot, after_revert):
    """The domain's state once reverted to ``snapshot`` (for check mode), as ``domain_state`` names it."""
    if after_revert in ('running', 'paused'):
        return after_revert
    return snapshot.state if snapshot.state in ('running', 'paused') else 'shutoff'


def _shown(value):
    """A name or description in a diff line: JSON-quoted (empty and odd ones stay visible), ``none`` for None."""
    return 'none' if value is None else json.dumps(value, ensure_ascii=False)


def snapshot_diff(label, before, after, after_text, revert=None):
    """Ansible's ``diff`` for one domain: the tree before and after as virsh draws it, then a line for each
    change the tree cannot show (the current snapshot, a description, the domain's state after a revert).

    ``after_text`` is ``after`` rendered (the result's ``tree``); ``revert`` is ``(state before, state after,
    snapshot)`` for a revert, the states as ``domain_state`` names them.
    """
    old, new = [], []
    if before.current != after.current:
        old.append('current snapshot: %s' % _shown(before.current))
        new.append('current snapshot: %s' % _shown(after.current))
    for name in after.topological():
        snap = before.by_name.get(name)
        if snap is not None and snap.description != after.by_name[name].description:
            old.append('description of %s: %s' % (_shown(name), _shown(snap.description)))
            new.append('description of %s: %s' % (_shown(name), _shown(after.by_name[name].description)))
    if revert is not None:
        was, now, name = revert
        old.append('domain state: %s' % DOMSTATE_WORDS.get(was, was))
        new.append('domain state: %s, reverted to snapshot %s' % (DOMSTATE_WORDS.get(now, now), _shown(name)))
    before_text = after_text if after is before else before.render()
    return dict(before=before_text + ''.join(line + '\n' for line in old),
                after=after_text + ''.join(line + '\n' for line in new),
                before_header='%s snapshots' % label, after_header='%s snapshots' % label)


def refuse_backup_overlays(dom, label):
    """A snapshot, revert or delete on a disk under a live backup's overlay would go to the overlay and be lost."""
    overlays = backup_overlays(dom)
    if overlays:
        target, path = overlays[0]
        raise InvalidInput(OVERLAY_LEFT % (label, target, path) + ": wait for the backup to end, or run "
                           "kvm.snapshots.vm_backup on the domain, which merges it first (by hand, domain running: "
                           "'virsh blockcommit %s %s --active --pivot')" % (label, target))


def manage_domain(dom, params, check_mode, diff_mode=False):
    """Bring one domain's snapshots to ``params['state']``; its result entry (with ``diff`` in diff mode)."""
    label = dom.name()
    refuse_backup_overlays(dom, label)
    before = SnapshotTree.from_domain(dom)
    state = params['state']
    warnings = []
    if state == 'reverted':
        was = domain_state(dom) if diff_mode else None
        after, changed, deleted = _reverted(dom, label, before, params, check_mode, warnings)
    else:
        after, changed, deleted = STATE_HANDLERS[state](dom, label, before, params, check_mode)
    result = dict(domain=label, changed=changed)
    if warnings:
        result['warnings'] = warnings
    if state in ('present', 'reverted', 'current'):
        result['snapshot'] = after.facts(params['name']) if params['name'] in after else None
    if deleted is not None:
        result['deleted'] = deleted
    result.update(after.rendered())
    if state == 'reverted' and params['reset_nvram'] and params['after_revert'] == 'snapshot' \
            and before.by_name[params['name']].state not in ('running', 'paused'):
        result.setdefault('warnings', []).append(NVRAM_NOT_RESET % (label, params['name']))
    if diff_mode:
        revert = None
        if state == 'reverted':
            now = predict_domain_state(before.by_name[params['name']], params['after_revert']) if check_mode \
                else domain_state(dom)
            revert = (was, now, params['name'])
        result['diff'] = snapshot_diff(label, before, after, result['tree'], revert)
    return result


def manage_snapshots(params, defaults, check_mode=False, diff_mode=False):
    """vm_snapshot's whole result for its module parameters (``defaults``: the argument spec's)."""
    validate(params, defaults)
    with Connection(params['uri']) as conn:
        if params['domain'] is not None:
            return manage_domain(lookup_domain(conn, params['domain']), params, check_mode, diff_mode)
        found, missing = resolve_domains(conn, params['domains'])
        if missing:
            # a typo must not leave half the fleet done: refuse before any domain is touched
            raise InvalidInput("%s %s not found on %s: nothing was done to any domain; check the names with "
                               "'virsh list --all' and fix them, or write a glob (like '%s*') for a domain that "
                               "may be absent" % ('domain' if len(missing) == 1 else 'domains',
                                                  ', '.join("'%s'" % shown(name) for name in missing),
                                                  params['uri'], shown(missing[0])))
        warnings = ["domains: the glob '%s' matches no domain on %s" % (shown(pattern), params['uri'])
                    for pattern in params['domains']
                    if is_glob(pattern) and not any(fnmatch.fnmatchcase(label, pattern) for label, _dom in found)]
        outcomes = for_each(found, lambda _label, dom: manage_domain(dom, params, check_mode, diff_mode))
    results, diffs, failures = [], [], []
    for label, outcome, error in outcomes:
        if error is not None:
            failures.append((label, str(error)))
            results.append(dict(domain=label, changed=False, msg=str(error)))
            continue
        if diff_mode:
            diffs.append(outcome.pop('diff'))
        warnings.extend(outcome.pop('warnings', []))
        results.append(outcome)
    changed = any(entry['changed'] for entry in results)
    if failures:
        detail = '; '.join(text for _label, text in failures[:3]) + ('; ...' if len(failures) > 3 else '')
        raise KvmError('%d of %d domains failed (%s); every domain\'s outcome is in results'
                       % (len(failures), len(results), detail), results=results, changed=changed,
                       **(dict(warnings=warnings) if warnings else {}))
    result = dict(changed=changed, results=results)
    if warnings:
        result['warnings'] = warnings
    if diff_mode:
        result['diff'] = diffs
    return result
