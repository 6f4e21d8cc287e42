"""Copy spec/ACQE-rans.md into section 13 of spec/ACQE.md (between the BEGIN/END markers).

    python spec/include_rans.py           # rewrite spec/ACQE.md
    python spec/include_rans.py --check   # exit 1 if spec/ACQE.md is out of date

Headings "## N. Title" become "### 13.N Title" and references "§N" become "§13.N".
"""
from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN = "<!-- BEGIN ACQE-rans.md (copied by spec/include_rans.py; edit spec/ACQE-rans.md, then re-run it) -->"
END = "<!-- END ACQE-rans.md -->"


def transformed(rans_text: str) -> str:
    lines = rans_text.strip("\n").split("\n")
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = []
    for line in lines:
        m = re.match(r"^## (\d+)\. (.*)$", line)
        if m:
            line = f"### 13.{m.group(1)} {m.group(2)}"
        else:
            line = re.sub(r"§(\d+)", r"§13.\1", line)
        out.append(line)
    return "\n".join(out).strip("\n")


def render(acqe_text: str, rans_text: str) -> str:
    a = acqe_text.index(BEGIN) + len(BEGIN)
    b = acqe_text.index(END)
    return acqe_text[:a] + "\n" + transformed(rans_text) + "\n" + acqe_text[b:]


def main(argv) -> int:
    acqe_path, rans_path = os.path.join(HERE, "ACQE.md"), os.path.join(HERE, "ACQE-rans.md")
    acqe = open(acqe_path, encoding="utf-8").read()
    new = render(acqe, open(rans_path, encoding="utf-8").read())
    if "--check" in argv:
        if new != acqe:
            print("spec/ACQE.md section 13 differs from spec/ACQE-rans.md: run python spec/include_rans.py")
            return 1
        return 0
    if new != acqe:
        with open(acqe_path, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
