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
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sass_summary import demangle, functions  # noqa: E402  (the listing's parser, and c++filt)

# Control bits of an sm_70+ instruction, bits 105-125 of its 128: stall [105:108], yield [109],
# write barrier [110:112] (7: none), read barrier [113:115], wait mask [116:121], reuse [122:125].
CONTROL_SHIFT = 105 - 64


def kernels(path):
    """{mangled name: [(address, instruction, write barrier, wait mask)]} of a cuobjdump -sass listing."""
    out = {}
    for name, lines in functions(open(path).read(), control_words=True).items():
        body = []
        for first, second in zip(lines[0::2], lines[1::2]):
            m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s*(.*?);', first)
            control = int(re.search(r'0x[0-9a-f]+', second).group(0), 16) >> CONTROL_SHIFT
            body.append((int(m.group(1), 16), m.group(2).strip(), (control >> 5) & 7, (control >> 11) & 0x3F))
        out[name] = body
    return out


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
    hits = {}
    for name, body in kernels(args[0]).items():
        if pattern and not re.search(pattern, name):
            continue
        hit = serialized(body)
        # Mangled: kvcast's own kernels and those taking its types name '6kvcast'.
        if hit and (everything or ('read_' not in name and 'STRONG.SM' not in hit[3][1] and '6kvcast' in name)):
            hits[name] = hit
    for pretty, (at, barrier, loads, (then, instruction)) in zip(demangle(list(hits)), hits.values()):
        waited = ', '.join(f'{a:04x} {o}' for a, o in loads)
        print(f'{pretty}\n    waits at {at:04x} on scoreboard {barrier} ({waited}); then {then:04x} {instruction}')
    found = len(hits)
    print(f'{found} kernels with a global load after a wait for another')


if __name__ == '__main__':
    main()
