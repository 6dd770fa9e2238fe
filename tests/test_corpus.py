import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saesteer.corpus import (
    CorpusError,
    Document,
    LocalFilesSource,
    PythonDocsSource,
    ShakespeareSource,
    build_source,
    mixed_documents,
    pack_documents,
    split_of,
)


def test_split_is_deterministic_and_near_the_fraction():
    ids = [str(i) for i in range(5000)]
    first = [split_of("src", i, 0.1) for i in ids]
    assert first == [split_of("src", i, 0.1) for i in ids]
    assert 0.08 < first.count("heldout") / len(ids) < 0.12


def test_train_and_heldout_never_share_a_document(tmp_path):
    source = ShakespeareSource()
    train = {d.doc_id for d in mixed_documents([source], [1.0], "train", 0.1, 0)}
    held = {d.doc_id for d in mixed_documents([source], [1.0], "heldout", 0.1, 0)}
    assert train and held and not train & held
    assert len(train) + len(held) == len(list(source.documents()))


def test_offline_sources_are_real_text():
    scene = next(iter(ShakespeareSource().documents()))
    assert "**" not in scene.text and len(scene.text) > 200
    docs = PythonDocsSource().documents()
    doc = next(d for d in docs if d.doc_id == "json/__init__")
    assert "JSON" in doc.text


def test_mix_follows_weights_and_seed():
    a = [Document("a", str(i), "x") for i in range(2000)]
    b = [Document("b", str(i), "y") for i in range(2000)]

    class ListSource:
        def __init__(self, name, docs):
            self.name, self.docs = name, docs

        def documents(self):
            return iter(self.docs)

    mix = [d.source for d in mixed_documents([ListSource("a", a), ListSource("b", b)], [3, 1], "train", 0.0, 7)][:1000]
    assert 0.70 < mix.count("a") / 1000 < 0.80
    again = [d.source for d in mixed_documents([ListSource("a", a), ListSource("b", b)], [3, 1], "train", 0.0, 7)][:1000]
    assert mix == again


def test_packing_gives_full_contexts_with_bos_and_eos(char_tokenizer):
    docs = [Document("s", str(i), "abc" * (i + 1)) for i in range(30)]
    records = []
    contexts = list(pack_documents(docs, char_tokenizer, 16, records))
    assert contexts and all(len(c.tokens) == 16 for c in contexts)
    assert all(c.tokens[0] == char_tokenizer.bos_token_id for c in contexts)
    stream = [t for c in contexts for t in c.tokens[1:]]
    expected = [t for d in docs for t in char_tokenizer(d.text)["input_ids"] + [char_tokenizer.eos_token_id]]
    assert stream == expected[: len(stream)]
    for c in contexts:  # spans cover every non-BOS position exactly once, in order
        assert sum(n for _, _, n in c.spans) == 15 and c.spans[0][1] == 1
    assert sum(r.n_tokens for r in records) >= len(stream)


def test_local_files_read_txt_jsonl_parquet(tmp_path):
    (tmp_path / "a.txt").write_text("plain text file")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "json line"}) + "\n\n" + json.dumps({"body": "second"}) + "\n")
    pq.write_table(pa.table({"body": ["parquet row"]}), tmp_path / "c.parquet")
    texts = [d.text for d in LocalFilesSource("l", str(tmp_path), text_field="body").documents()]
    assert texts == ["plain text file", "json line", "second", "parquet row"]


def test_bad_local_files_are_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2"):
        list(LocalFilesSource("l", str(tmp_path)).documents())
    with pytest.raises(CorpusError, match="no .txt/.jsonl/.parquet files"):
        list(LocalFilesSource("l", str(tmp_path / "missing*.txt")).documents())
    with pytest.raises(CorpusError, match="unknown kind 'web'"):
        build_source({"kind": "web", "name": "w"})


def test_hf_dataset_source_streams(tmp_path):
    """The cluster's streaming path, offline: the generic parquet builder over a local file."""
    pq.write_table(pa.table({"content": [f"row {i} of a streamed dataset" for i in range(50)]}), tmp_path / "d.parquet")
    source = build_source(
        {
            "kind": "hf_dataset",
            "name": "hf",
            "path": "parquet",
            "data_files": str(tmp_path / "d.parquet"),
            "text_field": "content",
        }
    )
    docs = list(source.documents())
    assert [d.doc_id for d in docs[:3]] == ["0", "1", "2"] and docs[49].text == "row 49 of a streamed dataset"
    bad = build_source({"kind": "hf_dataset", "name": "hf", "path": "parquet", "data_files": str(tmp_path / "d.parquet")})
    with pytest.raises(CorpusError, match="no field 'text'"):
        next(iter(bad.documents()))
