"""Which face keeps a receipt's identifiers readable by OCR: each candidate font sets 160
protocol numbers in the four agencies' formats (simulators/numbering.py), the page is rendered at
300 dpi (poppler's pdftoppm) and read back (tesseract), and the exact read-backs are counted.

Needs Debian's poppler-utils and tesseract-ocr (.ci/run installs them).
Run: .venv/bin/python bench/receipt_ocr.py [--numbers 40] [--dpi 300]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fpdf import FPDF

#: (face, style, size in pt); the receipt uses the first one (documents/receipt_pdf.py).
CANDIDATES = [("Courier", "", 12), ("Courier", "B", 12), ("Helvetica", "", 12), ("Helvetica", "B", 12),
              ("Courier", "B", 14), ("Helvetica", "B", 14)]


def identifiers(per_format: int) -> list[str]:
    found: list[str] = []
    for n in range(1, per_format + 1):
        found += [f"INPS.0001.2026.{n:07d}", f"RM/RI/2026/{n:06d}", f"INAIL/2026/{n:08d}", f"CRV-2026-{n:06d}"]
    return found


def read_back(face: str, style: str, size: int, ids: list[str], dpi: int, work: Path) -> int:
    """How many of `ids`, set in this font beside a receipt's label, OCR reads back exactly."""
    pdf = FPDF(format="A4")
    pdf.add_page()
    for ident in ids:
        pdf.set_font("Helvetica", size=9)
        pdf.cell(62, 6, "Numero di protocollo / Protocol number")
        pdf.set_font(face, style=style, size=size)
        pdf.cell(0, 6, ident, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(work / "ids.pdf"))
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(work / "ids.pdf"), str(work / "page")],
                   check=True)
    text = ""
    for page in sorted(work.glob("page*.png")):
        text += subprocess.run(["tesseract", str(page), "-", "--psm", "4"], capture_output=True, text=True,
                               check=True).stdout
        page.unlink()
    flat = re.sub(r"\s+", "", text)  # tesseract reads Courier's wide advance as spaces
    return sum(1 for ident in ids if ident in flat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=40, help="identifiers per format (four formats)")
    parser.add_argument("--dpi", type=int, default=300)
    args = parser.parse_args()
    missing = [tool for tool in ("pdftoppm", "tesseract") if shutil.which(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian: poppler-utils, tesseract-ocr)", file=sys.stderr)
        return 2
    ids = identifiers(args.numbers)
    with tempfile.TemporaryDirectory() as folder:
        for face, style, size in CANDIDATES:
            read = read_back(face, style, size, ids, args.dpi, Path(folder))
            print(f"{face:<9} {'bold' if style else 'regular':<7} {size:>2} pt  read back {read:>3} / {len(ids)}")
    print(f"reproduce: .venv/bin/python bench/receipt_ocr.py --numbers {args.numbers} --dpi {args.dpi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
