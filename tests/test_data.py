import time

import pytest

from compstudy import data


def test_parse_spec_rejects_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown corpus 'nope'.*wikitext-2"):
        data.parse_spec("nope:test")
    with pytest.raises(ValueError, match=r"splits \('train', 'valid', 'test'\), not 'dev'"):
        data.parse_spec("wikitext-2:dev")
    with pytest.raises(ValueError, match="name:split"):
        data.parse_spec("wikitext-2")


def test_tinyshakespeare_split_is_deterministic_90_10():
    train, test = data.load_text("tinyshakespeare:train"), data.load_text("tinyshakespeare:test")
    whole = (data.paths.data_dir() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert train + test == whole
    assert len(train) == int(len(whole) * 0.9)
    assert data.load_text("tinyshakespeare:train") == train


def test_wikitext_files_are_the_word_level_release():
    text = data.load_text("wikitext-2:test")
    assert " @-@ " in text and "<unk>" in text


def test_missing_wikitext_split_names_files_and_fix(tmp_path):
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "valid.txt").write_text("a b c\n")
    with pytest.raises(data.CorpusUnavailable) as err:
        data.load_text("wikitext-2:train", data_dir=tmp_path)
    msg = str(err.value)
    assert "train.txt" in msg and "valid.txt" in msg and "wikitext-2:valid" in msg


@pytest.mark.parametrize("spec,path", [("c4:validation", "c4/validation.txt"), ("lambada:test", "lambada/test.txt")])
def test_online_only_corpora_fail_at_once_offline(tmp_path, spec, path):
    t0 = time.perf_counter()
    with pytest.raises(data.CorpusUnavailable, match="online-only") as err:
        data.load_text(spec, data_dir=tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert path in str(err.value)
    # and a provided local file is used
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("hello world")
    assert data.load_text(spec, data_dir=tmp_path) == "hello world"


def test_folder_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 90)
    (tmp_path / "b.txt").write_text("y" * 9)
    train = data.load_text(f"{tmp_path}:train")
    test = data.load_text(f"{tmp_path}:test")
    assert train + test == "x" * 90 + "\n" + "y" * 9
    (tmp_path / "valid.txt").write_text("named split")
    assert data.load_text(f"{tmp_path}:valid") == "named split"


def test_data_dir_environment_override(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("0123456789")
    monkeypatch.setenv("COMPSTUDY_DATA_DIR", str(tmp_path))
    assert data.load_text("tinyshakespeare:test") == "9"


def test_bpe_tokenizer_round_trip(tmp_path):
    text = data.load_text("tinyshakespeare:test")
    tok = data.train_bpe_tokenizer(text, vocab_size=400, save_dir=tmp_path)
    again = data.load_tokenizer(tmp_path)
    sample = text[:2000]
    ids = data.encode(again, sample)
    assert again.decode(ids.tolist()) == sample  # byte-level BPE is lossless
    assert len(again) <= 400 and again.eos_token == "<|endoftext|>"
    assert ids.tolist() == data.encode(tok, sample).tolist()
    with pytest.raises(ValueError, match="vocab_size must be >= 260"):
        data.train_bpe_tokenizer(text, vocab_size=100)
