"""Rebuild ``austen_paragraphs.jsonl.gz``, the human text the demo and the tests use.

Source: Jane Austen's six novels (public domain) as packaged by Debian in ``r-cran-janeaustenr``
(the R package's code is MIT-licensed; the novels themselves are in the public domain).
Nothing here runs at import or at run time; it is the recipe for the shipped file::

    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb /tmp/ja
    python -m venv /tmp/rvenv && /tmp/rvenv/bin/pip install rdata
    /tmp/rvenv/bin/python monitors/data/rebuild_austen.py /tmp/ja

Each output line is ``{"id", "book", "text"}``: one paragraph of 20-200 words, in book order.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from pathlib import Path

MIN_WORDS, MAX_WORDS = 20, 200


def read_books(root: Path) -> dict[str, list[str]]:
    import rdata  # only needed to rebuild the file

    base = root / "usr/lib/R/site-library/janeaustenr/data/Rdata"
    index = rdata.conversion.convert(rdata.parser.parse_file(str(base) + ".rdx"))
    blob = (Path(str(base) + ".rdb")).read_bytes()
    books = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset) : int(offset) + int(length)]
        # R lazy-load DB entry: 4-byte uncompressed length, then a zlib stream of an RDS object.
        raw = zlib.decompress(chunk[4:])
        books[str(name)] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return books


def paragraphs(lines: list[str]) -> list[str]:
    out, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    return [p for p in out if MIN_WORDS <= len(p.split()) <= MAX_WORDS]


def main(root: str) -> None:
    target = Path(__file__).with_name("austen_paragraphs.jsonl.gz")
    n = 0
    with gzip.open(target, "wt", encoding="utf-8") as fh:
        for book, lines in sorted(read_books(Path(root)).items()):
            for i, text in enumerate(paragraphs(lines)):
                fh.write(json.dumps({"id": f"{book}-{i:05d}", "book": book, "text": text}) + "\n")
                n += 1
    print(f"wrote {n} paragraphs to {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ja")
