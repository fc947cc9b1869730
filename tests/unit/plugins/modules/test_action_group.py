# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action group in meta/runtime.yml and the modules' action_group attribute agree.

validate-modules checks only that the attribute has a membership list; this
checks that every module is in the group ``kvm`` and says so in its docs, so a
module added later cannot be left out of ``group/kvm.snapshots.kvm``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[4]
MODULES = sorted(p.stem for p in (ROOT / 'plugins' / 'modules').glob('*.py') if p.stem != '__init__')


def _assigned(path, name):
    """The YAML of the string assigned to ``name`` anywhere in the Python file ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == name for t in node.targets):
            return yaml.safe_load(node.value.value)
    raise AssertionError('%s has no %s' % (path, name))


def _documentation(name):
    """A module's DOCUMENTATION with the attributes of its kvm.snapshots doc fragments merged in, as ansible-doc does."""
    doc = _assigned(ROOT / 'plugins' / 'modules' / (name + '.py'), 'DOCUMENTATION')
    for fragment in doc.get('extends_documentation_fragment') or []:
        if fragment.startswith('kvm.snapshots.'):
            extra = _assigned(ROOT / 'plugins' / 'doc_fragments' / (fragment.split('.')[2] + '.py'), 'DOCUMENTATION')
            doc.setdefault('attributes', {}).update(extra.get('attributes') or {})
    return doc


def test_every_module_is_in_the_group():
    runtime = yaml.safe_load((ROOT / 'meta' / 'runtime.yml').read_text(encoding='utf-8'))
    assert sorted(runtime['action_groups']['kvm']) == MODULES


@pytest.mark.parametrize('name', MODULES)
def test_docs_name_the_group(name):
    attribute = _documentation(name)['attributes']['action_group']
    assert attribute['support'] == 'full'
    assert attribute['membership'] == ['kvm.snapshots.kvm']
