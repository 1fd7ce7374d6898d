#!/usr/bin/env python3
"""Summarises `cuobjdump -sass` of a kvcast binary: each write kernel's SASS instruction count,
and the memory and conversion opcodes of the bf16 E4M3 dense 16-wide and realigned kernels.

    python3 tools/sass_summary.py SASS.txt
"""
import collections
import re
import subprocess
import sys

OPCODES = re.compile(r"(LDG|STG)\.E[A-Z0-9_.]*|SHFL\.[A-Z]+|F2FP[A-Z0-9_.]*|MUFU[A-Z0-9_.]*|FCHK|CALL[A-Z.]*")


INSTRUCTION = re.compile(r"\s+/\*[0-9a-f]{4,}\*/")


def functions(text, control_words=False):
    """{mangled name: its instruction lines}; with control_words, each instruction line followed
    by the line of its second 64-bit word (the control bits: tools/sass_loads.py)."""
    funcs, name, previous = collections.OrderedDict(), None, False
    for line in text.splitlines():
        m = re.match(r"\s+Function : (\S+)", line)
        if m:
            name, previous = m.group(1), False
            funcs[name] = []
        elif name and INSTRUCTION.match(line):
            funcs[name].append(line)
            previous = True
        elif name and control_words and previous and re.match(r"\s+/\* 0x[0-9a-f]+ \*/", line):
            funcs[name].append(line)
            previous = False
    return funcs


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    except OSError:  # no binutils: the mangled names
        out = names
    return [re.sub(r"kvcast::|detail::", "", n) for n in out]


def main():
    funcs = functions(open(sys.argv[1]).read())
    pretty = dict(zip(funcs, demangle(list(funcs))))
    names = [n for n in funcs if re.match(r"void (write_kernel|write_realigned_kernel|write_row_head_warp_kernel|write_row_head_lean_kernel|write_amax_lean_kernel)<", pretty[n])]
    print(f"{len(names)} write kernels; SASS instructions (NOPs excluded) of each:")
    for n in sorted(names, key=lambda n: pretty[n]):
        count = sum(1 for line in funcs[n] if "NOP" not in line)
        print(f"  {count:6d}  {pretty[n]}")
    for label, pattern in (("dense, 16-wide vectors", r"write_kernel<__nv_bfloat16, Fp8<e4m3, \(Arithmetic\)0>, PerTensorScale, DenseRows, 16, \(tile::Access\)0>"),
                           ("realigned", r"write_realigned_kernel<__nv_bfloat16, Fp8<e4m3, \(Arithmetic\)\d>")):
        ops = collections.Counter()
        for n in names:
            if re.search(pattern, pretty[n]):
                ops.update(m.group(0) for line in funcs[n] for m in OPCODES.finditer(line))
        print(f"opcodes, bf16 E4M3 {label} (both modes where the pattern takes both):")
        for op, c in sorted(ops.items()):
            print(f"  {c:5d} {op}")


if __name__ == "__main__":
    main()
