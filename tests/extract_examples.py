# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write the playbooks and task lists shown in Markdown files out for ansible-lint.

    tests/extract_examples.py OUT_DIR FILE.md...

Every ```yaml fenced block (indented ones too, e.g. inside a list item) is
read. A block that is a list of plays (each with ``hosts`` or
``import_playbook``) goes to OUT_DIR/playbooks/, a list of tasks (each a
mapping that names a module, a block or an include) goes there too,
wrapped in a play (``hosts: all``) so that ansible-lint's syntax check
resolves its modules. Anything else (an execution
environment definition, a credential type, variables) is not Ansible content
and is skipped. Each file is named after its source and the line of the
block's opening fence, e.g. ``docs-awx.md-L82.yml``, and starts with a ``---``
standing in for the fence: line N of a playbook file is line 82 + N - 1 of
the doc; a wrapped task list says in its first comment how far down it starts.

Also writes OUT_DIR/.ansible-lint (production profile, offline), which mocks
the modules of collections the examples use but the test host does not carry
(``awx.awx``), and prints one line per block and a count; exits 1 when a yaml
block does not parse or when no block at all was extracted (a lint run over
nothing must not pass).
"""

import os
import re
import sys

import yaml

FENCE = re.compile(r'^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)')
# modules of collections the docs' examples use that are not installed on the
# test host: ansible-lint checks the task's shape but not the module's options
MOCK_MODULES = ['awx.awx.job_template', 'awx.awx.schedule']
PLAY_KEYS = ('hosts', 'import_playbook', 'ansible.builtin.import_playbook')
WRAP = '''# %s: a task list, wrapped in a play; line N here is line N%+d there
- name: Tasks from %s
  hosts: all
  gather_facts: false
  tasks:
'''


def blocks(path):
    """(line number of the opening fence, language, text) of each fenced block of a Markdown file."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group('indent'), m.group('fence'), m.group('info').lower()
        start = i + 1
        body = []
        i += 1
        while i < len(lines) and not re.match(r'^[ \t]*%s%s*[ \t]*$' % (re.escape(fence), fence[0]), lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        yield start, info, '\n'.join(body) + '\n'


def kind(data):
    """'playbook', 'tasks' or None for what a yaml block holds."""
    if not isinstance(data, list) or not data or not all(isinstance(x, dict) for x in data):
        return None
    if all(any(k in x for k in PLAY_KEYS) for x in data):
        return 'playbook'
    if any(any(k in x for k in PLAY_KEYS) for x in data):
        return None
    # a task names a module (any key other than the task keywords), a block or an include
    keywords = {'name', 'when', 'register', 'loop', 'loop_control', 'vars', 'tags', 'become',
                'delegate_to', 'run_once', 'check_mode', 'diff', 'changed_when', 'failed_when',
                'ignore_errors', 'notify', 'environment', 'no_log', 'until', 'retries', 'delay',
                'module_defaults', 'args', 'become_user', 'throttle', 'timeout', 'any_errors_fatal'}
    if all(set(x) - keywords for x in data):
        return 'tasks'
    return None


def main(out_dir, paths):
    found = {'playbook': 0, 'tasks': 0}
    bad = 0
    os.makedirs(os.path.join(out_dir, 'playbooks'), exist_ok=True)
    for path in paths:
        for line, info, text in blocks(path):
            if info not in ('yaml', 'yml'):
                continue
            where = '%s:%d' % (path, line)
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                print('%s: yaml block does not parse: %s' % (where, str(exc).replace('\n', ' ')))
                bad += 1
                continue
            what = kind(data)
            if what is None:
                print('%s: skipped (not a playbook or task list)' % where)
                continue
            name = '%s-L%d.yml' % (path.replace('/', '-'), line)
            target = os.path.join(out_dir, 'playbooks', name)
            if what == 'tasks':
                # in a play of its own, so that ansible-lint's syntax check
                # resolves every module (a bare task file is not checked: a
                # module name without its collection would pass)
                text = WRAP % (where, line - 1 - len(WRAP.splitlines()), where) + ''.join(
                    '    ' + x if x.strip() else x for x in text.splitlines(True))
            with open(target, 'w', encoding='utf-8') as f:
                # line 1 stands for the fence: a '---' of its own, or a comment before the block's own
                f.write(('# %s\n' % where if text.startswith('---') else '---\n') + text)
            found[what] += 1
            print('%s: %s -> %s' % (where, what, os.path.relpath(target, out_dir)))
    with open(os.path.join(out_dir, '.ansible-lint'), 'w', encoding='utf-8') as f:
        f.write('---\n# written by tests/extract_examples.py\nprofile: production\noffline: true\n'
                'mock_modules:\n%s' % ''.join('  - %s\n' % m for m in MOCK_MODULES))
    total = found['playbook'] + found['tasks']
    print('examples: %d blocks extracted (%d playbooks, %d task lists) from %d files'
          % (total, found['playbook'], found['tasks'], len(paths)))
    if bad or not total:
        if not total:
            print('examples: no playbook or task list found: nothing to lint')
        return 1
    return 0


if __name__ == '__main__':
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
