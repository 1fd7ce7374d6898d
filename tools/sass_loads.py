#!/usr/bin/env python3
"""Global loads that start a memory latency after another, from a kernel's SASS.

    cuobjdump -sass BINARY > sass.txt
    python3 tools/sass_loads.py sass.txt [NAME_REGEX]

A decode call is one memory latency when every global load is issued before any is waited
for. ptxas tracks loads with six scoreboards (the control bits of each sm_70+ instruction: a
write barrier the load sets, a mask of barriers the instruction waits for), and may give a
constant-bank load (LDC) and a global load one scoreboard: then an instruction that needs the
LDC's value waits for the global load too, and any global load issued after it starts a second
latency. Within each kernel, up to its first store, this prints the first wait on a scoreboard
that a global load set that some later global load follows. Read kernels wait for a slot by
design (the row's address comes from it), and the amax floor (LDG.E.STRONG.SM) is issued in
large grids only; `--all` prints those too. Linear in the listing: branches are not followed.
"""
import re
import subprocess
import sys

# Control bits of an sm_70+ instruction, bits 105-125 of its 128: stall [105:108], yield [109],
# write barrier [110:112] (7: none), read barrier [113:115], wait mask [116:121], reuse [122:125].
CONTROL_SHIFT = 105 - 64


def kernels(path):
    """{mangled name: [(address, instruction, write barrier, wait mask)]} of a cuobjdump -sass listing."""
    out, name, body, pending = {}, None, [], None
    for line in open(path):
        if 'Function :' in line:
            if name:
                out[name] = body
            name, body, pending = line.split('Function :')[1].strip(), [], None
            continue
        if not name:
            continue
        m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s*(.*?);\s*/\* (0x[0-9a-f]+) \*/', line)
        if m:
            pending = (int(m.group(1), 16), m.group(2).strip())
            continue
        m = re.match(r'\s*/\* (0x[0-9a-f]+) \*/', line)
        if m and pending:
            control = int(m.group(1), 16) >> CONTROL_SHIFT
            body.append((pending[0], pending[1], (control >> 5) & 7, (control >> 11) & 0x3F))
            pending = None
    if name:
        out[name] = body
    return out


def demangle(name):
    try:
        return subprocess.run(['c++filt'], input=name, capture_output=True, text=True).stdout.strip() or name
    except OSError:  # no binutils: the mangled name
        return name


def opcode(instruction):
    return re.sub(r'^@!?U?P\w+\s+', '', instruction).split()[0]


def serialized(body):
    """(wait address, barrier, the loads it waited for, the global load after it), or None."""
    since_wait = {}  # barrier -> [(address, opcode)] set since its last wait
    waited = None
    for address, instruction, barrier, mask in body:
        op = opcode(instruction)
        if op.startswith(('STG', 'RED', 'ATOM')):
            return None
        for b in range(6):
            if mask >> b & 1:
                loads = since_wait.get(b, [])
                if waited is None and any(o.startswith('LDG') for _, o in loads):
                    waited = (address, b, loads)
                since_wait[b] = []
        if op.startswith('LDG') and waited is not None:
            return waited + ((address, instruction),)
        if barrier != 7:
            since_wait.setdefault(barrier, []).append((address, op))
    return None


def main():
    args = [a for a in sys.argv[1:] if a != '--all']
    if not args:
        sys.exit(__doc__)
    everything = '--all' in sys.argv
    pattern = args[1] if len(args) > 1 else ''
    found = 0
    for name, body in kernels(args[0]).items():
        if pattern and not re.search(pattern, name):
            continue
        hit = serialized(body)
        if not hit:
            continue
        (at, barrier, loads, (then, instruction)) = hit
        demangled = demangle(name)
        if not everything and ('read_' in demangled or 'STRONG.SM' in instruction or 'kvcast::' not in demangled):
            continue
        found += 1
        waited = ', '.join(f'{a:04x} {o}' for a, o in loads)
        print(f'{demangled}\n    waits at {at:04x} on scoreboard {barrier} ({waited}); then {then:04x} {instruction}')
    print(f'{found} kernels with a global load after a wait for another')


if __name__ == '__main__':
    main()
