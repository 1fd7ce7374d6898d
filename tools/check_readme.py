#!/usr/bin/env python3
"""README's API examples must be the code CI compiles: the first ```cpp block of README.md equals
the part of examples/consumers/main.cu between `// README:begin` and `// README:end`, and the
read's example (`// README:read:begin` .. `// README:read:end`) is one of README's cpp blocks."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()
source = (root / "examples/consumers/main.cu").read_text()
blocks = re.findall(r"```cpp\n(.*?)```", readme, re.S)
snippet = re.search(r"// README:begin\n(.*?)// README:end\n", source, re.S)
read = re.search(r"// README:read:begin\n(.*?)// README:read:end\n", source, re.S)
if not blocks or not snippet or not read:
    sys.exit("check_readme: README's cpp blocks or main.cu's README markers are missing")
if blocks[0] != snippet.group(1):
    sys.exit("check_readme: README's API example differs from examples/consumers/main.cu")
if read.group(1) not in blocks:
    sys.exit("check_readme: README's read example differs from examples/consumers/main.cu")
print("check_readme: README's API examples are the compiled ones")
