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

import datetime

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    DomainNotFound,
    SnapshotNotFound,
    all_domains,
    domain_disks,
    domain_state,
    for_each,
    lookup_domain,
    qemu_img_info,
    resolve_domains,
)

try:
    from lxml import etree
except ImportError:
    etree = None  # ensure_libraries() reports it before anything here runs

try:
    import libvirt
except ImportError:
    libvirt = None


class Snapshot:
    """One snapshot as its XML describes it."""

    __slots__ = ('name', 'description', 'state', 'parent', 'creation_epoch', 'memory', 'disks',
                 'xml', 'children', 'is_current', 'has_metadata')

    def __init__(self, xml, is_current=False, has_metadata=True):
        root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
        self.xml = xml
        self.name = root.findtext('name')
        self.description = root.findtext('description') or ''
        self.state = root.findtext('state')
        self.parent = root.findtext('parent/name')
        self.creation_epoch = int(root.findtext('creationTime') or 0)
        memory = root.find('memory')
        self.memory = memory.get('snapshot') if memory is not None else None
        self.disks = [dict(name=disk.get('name'), snapshot=disk.get('snapshot'))
                      for disk in root.iterfind('disks/disk')]
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
        return cls([Snapshot(s.getXMLDesc(xml_flags),
                             is_current=(s.getName() == current),
                             has_metadata=s.getName() not in without_metadata) for s in snaps])

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
        """The tree as ``virsh snapshot-list --tree`` draws it (virsh's vshTreePrint, children by name)."""
        lines = []

        def draw(name, last_sibling, root, indent):
            snap = self.by_name[name]
            lines.append(indent + ('' if root else '+- ') + name)
            if not root:
                indent += (' ' if name == last_sibling else '|') + ' '
            if snap.children:
                lines.append(indent + '  |')
            for child in snap.children:
                draw(child, snap.children[-1], False, indent + '  ')
            if not snap.children and name == last_sibling:
                lines.append(indent)

        for root in self.roots():
            draw(root, root, True, '')
        return '\n'.join(lines) + '\n' if lines else ''

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
            descendants_count=len(self.descendants(name)),
            is_current=snap.is_current,
            has_metadata=snap.has_metadata,
            disks=[dict(disk) for disk in snap.disks],
        )


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
    disks = disk_sizes(etree.fromstring(dom.XMLDesc(0).encode())) if sizes else None
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
        tree=tree.render(),
        snapshots=snapshots,
    )
    if disks is not None:
        facts['disks'] = [{k: v for k, v in d.items() if k != 'snapshots'} for d in disks]
    return facts


INFO_FILTERS = ('name', 'roots', 'leaves', 'descendants_of', 'location', 'snapshot_state')


def gather_info(params):
    """vm_snapshot_info's whole result for its module parameters."""
    filters = {key: params[key] for key in INFO_FILTERS}
    with Connection(params['uri']) as conn:
        missing = []
        if params['domain'] is not None:
            try:
                targets = [(params['domain'], lookup_domain(conn, params['domain']))]
            except DomainNotFound:
                targets, missing = [], [params['domain']]
        elif params['domains'] is not None:
            targets, missing = resolve_domains(conn, params['domains'])
        else:
            targets = all_domains(conn)
        strict = params['domain'] is not None
        outcomes = for_each(targets, lambda label, dom: domain_facts(
            dom, filters, sizes=params['sizes'], xml=params['xml'], strict=strict))
    domains = {}
    for label, facts, error in outcomes:
        if error is not None:
            raise error
        domains[label] = facts
    for label in missing:
        domains[label] = dict(exists=False, state=None, current_snapshot=None, snapshot_count=0, tree='', snapshots=[])
    return dict(
        changed=False,
        domains=domains,
        with_snapshots=sorted(n for n, f in domains.items() if f['snapshot_count']),
        without_snapshots=sorted(n for n, f in domains.items() if f['exists'] and not f['snapshot_count']),
    )
