"""Write pip's install report (`pip install --dry-run --report`) as exact pins, for `make lock`."""
import json
import os
import re
import sys

HEADER = """\
# The versions `make install` and CI install (pip constraints: -c). pyproject.toml keeps the ranges a
# user's `pip install` resolves; this file makes the test machine's install the one last tested, so
# that a library's new release cannot turn CI red between two runs (transformers 5.25 did).
# Refresh with `make lock` (a fresh resolution), then run `make test` before committing it.
"""


def main(report_path: str, out_path: str) -> None:
    with open(report_path) as f:
        report = json.load(f)
    pins = {}
    for item in report["install"]:
        # PEP 503 names (lower case, "-"), so that the file reads one way and diffs stay small
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        version = item["metadata"]["version"]
        if name == "calibtune":
            continue
        pins[name] = version.split("+")[0]  # torch's "+cpu": requirements-cpu.txt picks the build
    with open(out_path + ".tmp", "w") as f:
        f.write(HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
