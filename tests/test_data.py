import time

import pytest
import torch

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


def test_missing_wikitext_split_names_file_checksum_and_fix(tmp_path):
    with pytest.raises(data.CorpusUnavailable) as err:
        data.load_text("wikitext-2:train", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "wikitext-2" / "train.txt") in msg and "COMPSTUDY_OFFLINE" in msg
    assert "git-blob-sha1:2d84b35af79e411d73ea7cae83c73964c6ac83b4" in msg and "by hand" in msg


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
    import shutil

    expected = data.load_text("tinyshakespeare:test")
    (tmp_path / "tinyshakespeare").mkdir()
    shutil.copy(data.paths.data_dir() / "tinyshakespeare" / "input.txt", tmp_path / "tinyshakespeare")
    monkeypatch.setenv("COMPSTUDY_DATA_DIR", str(tmp_path))
    assert data.load_text("tinyshakespeare:test") == expected
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("0123456789")  # the override is what is read
    with pytest.raises(data.CorpusChecksumError, match=str(tmp_path)):
        data.load_text("tinyshakespeare:test")


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


def test_token_ids_are_cached_on_disk_and_a_damaged_file_is_encoded_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPSTUDY_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    text = data.load_text("tinyshakespeare:test")[:30_000]
    tok = data.train_bpe_tokenizer(text, vocab_size=300)
    monkeypatch.setattr(data, "_ENCODED", {})
    expected = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    assert torch.equal(data.encode(tok, text), expected)
    folder = tmp_path / "artifacts" / data.ENCODED_DIR
    [saved] = folder.glob("*.npy")
    assert saved.name.startswith(f"{data.tokenizer_fingerprint(tok)}-{data.fingerprint(text)}-")
    # another process (an empty memo) reads them from disk: the tokenizer is not called
    monkeypatch.setattr(data, "_ENCODED", {})
    calls = []
    real_call = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__", lambda self, *a, **k: calls.append(1) or real_call(self, *a, **k))
    again = data.encode(tok, text)
    assert torch.equal(again, expected) and again.dtype == torch.long and not calls
    # a damaged file (bits flipped in the ids, or cut short) fails its check: deleted, the text encoded
    # again, the right ids saved again
    good = saved.read_bytes()
    for damage in ("flipped", "truncated"):
        blob = bytearray(good)
        if damage == "flipped":
            blob[-8:] = bytes(b ^ 0xFF for b in blob[-8:])
        else:
            del blob[len(blob) // 2:]
        saved.write_bytes(bytes(blob))
        monkeypatch.setattr(data, "_ENCODED", {})
        assert torch.equal(data.encode(tok, text), expected), damage
        assert "failed their check and were deleted" in capsys.readouterr().out, damage
        [resaved] = folder.glob("*.npy")
        assert resaved.name == saved.name and resaved.read_bytes() == good, damage
    assert len(calls) == 2
    # another text or another tokenizer: another file
    data.encode(tok, text[:500])
    data.encode(data.train_bpe_tokenizer(text, vocab_size=280), text)
    assert len(list(folder.glob("*.npy"))) == 3
    # a slow tokenizer (no backend, so its fingerprint is only its class and path) is never cached on disk

    class Slow:
        name_or_path = "slow"

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 7 for c in text]}

    assert data.encode(Slow(), text[:50]).tolist() == [ord(c) % 7 for c in text[:50]]
    assert len(list(folder.glob("*.npy"))) == 3


# --------------------------------------------------------------------------------------------
# Checksums and downloads (issue 15)


def test_the_real_corpora_pass_their_recorded_checksums():
    for source in data.SOURCES.values():
        path = data.paths.data_dir() / source.corpus / source.filename
        if not path.exists():  # wikitext-2 train is not available offline
            continue
        found = data.verify_file(path, source)
        assert found["size"] == source.size and found["sha256"] == source.sha256


def test_a_one_byte_change_fails_with_file_and_checksums(tmp_path):
    source = data.SOURCES[("tinyshakespeare", "input.txt")]
    blob = bytearray((data.paths.data_dir() / "tinyshakespeare" / "input.txt").read_bytes())
    blob[len(blob) // 2] ^= 1
    bad = tmp_path / "tinyshakespeare" / "input.txt"
    bad.parent.mkdir()
    bad.write_bytes(bytes(blob))
    with pytest.raises(data.CorpusChecksumError) as err:
        data.load_text("tinyshakespeare:test", data_dir=tmp_path)
    msg = str(err.value)
    assert str(bad) in msg and source.sha256 in msg and data.file_checksums(bad)["sha256"] in msg
    bad.write_bytes(bytes(blob[:-100]))  # truncated
    with pytest.raises(data.CorpusChecksumError, match="altered or truncated"):
        data.load_text("tinyshakespeare:test", data_dir=tmp_path)


def test_git_blob_ids_verify_a_file_without_a_sha256(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n"
    good = data.SourceFile("x", "train.txt", "file:///none", None, git_blob="ce013625030ba8dba906f756967f9e9ca394464a")
    assert data.verify_file(path, good)["size"] == 6
    path.write_bytes(b"hello!\n")
    with pytest.raises(data.CorpusChecksumError, match="git-blob-sha1:ce013625"):
        data.verify_file(path, good)


def test_download_from_a_loopback_server_is_verified_and_reused(loopback_mirror, tmp_path):
    import shutil

    (loopback_mirror / "tinyshakespeare").mkdir()
    shutil.copy(data.paths.data_dir() / "tinyshakespeare" / "input.txt", loopback_mirror / "tinyshakespeare")
    target = tmp_path / "data"
    text = data.load_text("tinyshakespeare:test", data_dir=target)
    assert (target / "tinyshakespeare" / "input.txt").exists() and text == data.load_text("tinyshakespeare:test")
    shutil.rmtree(loopback_mirror / "tinyshakespeare")  # the source is gone: the download is reused
    assert data.load_text("tinyshakespeare:train", data_dir=target)


def test_a_wrong_download_leaves_nothing_behind(loopback_mirror, tmp_path):
    (loopback_mirror / "wikitext-2").mkdir()
    (loopback_mirror / "wikitext-2" / "valid.txt").write_text("not wikitext\n")
    target = tmp_path / "data"
    with pytest.raises(data.CorpusChecksumError, match="expected sha256:f0737ed3"):
        data.load_text("wikitext-2:valid", data_dir=target)
    assert not list((target / "wikitext-2").iterdir())


def test_a_missing_corpus_with_no_reachable_source_fails_within_seconds(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("COMPSTUDY_CORPUS_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("COMPSTUDY_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(data.CorpusUnavailable) as err:
        data.load_text("wikitext-2:test", data_dir=tmp_path)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert str(tmp_path / "wikitext-2" / "test.txt") in msg and "sha256:d790b833" in msg and "by hand" in msg


def test_copy_from_verifies_like_a_download(tmp_path):
    copied = data.copy_from(data.paths.data_dir(), data_dir=tmp_path)
    assert {p.name for p in copied} == {"input.txt", "valid.txt", "test.txt"}
    assert data.copy_from(data.paths.data_dir(), data_dir=tmp_path) == []  # present: not copied again


def test_folder_corpora_are_labelled_by_name_and_decoded(tmp_path):
    folder = tmp_path / "my novel"
    folder.mkdir()
    (folder / "book.txt").write_bytes(("\ufeff" + "It was a dark night.\rThe end.\r" * 50).encode("utf-8"))
    spec = f"{folder}:test"
    assert data.corpus_label(spec) == "my novel:test"
    text = data.load_text(spec)
    assert "\ufeff" not in text and "\r" not in text
    (folder / "book.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="book.txt is not UTF-8"):
        data.load_text(spec)
