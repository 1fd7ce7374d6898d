#!/usr/bin/env python3
"""README's API example must be the code CI compiles: the first ```cpp block of README.md equals
the part of examples/consumers/main.cu between `// README:begin` and `// README:end`."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()
source = (root / "examples/consumers/main.cu").read_text()
block = re.search(r"```cpp\n(.*?)```", readme, re.S)
snippet = re.search(r"// README:begin\n(.*?)// README:end\n", source, re.S)
if not block or not snippet:
    sys.exit("check_readme: README's cpp block or main.cu's README markers are missing")
if block.group(1) != snippet.group(1):
    sys.exit("check_readme: README's API example differs from examples/consumers/main.cu")
print("check_readme: README's API example is the compiled one")
