import gzip
import json

import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("tokenizers")
from distil.text import TextDataset, augment, encode, word_tokenizer  # noqa: E402


def test_encode_pads_right_and_maps_mask_token():
    tok = word_tokenizer(["the movie was great", "a dull film"])
    enc = encode(tok, ["the movie", "[MASK] film was great", "unseenword"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == mask.shape == (3, 6)  # [CLS] 4 words [SEP]
    assert mask.tolist()[0] == [1, 1, 1, 1, 0, 0] and ids[0, 4:].tolist() == [0, 0]
    assert ids[1, 1].item() == tok.token_to_id("[MASK]")
    assert ids[2, 1].item() == tok.token_to_id("[UNK]")
    assert ids[0, 0].item() == tok.token_to_id("[CLS]") and ids[0, 3].item() == tok.token_to_id("[SEP]")


def test_truncation_keeps_sep():
    tok = word_tokenizer(["a b c d e f"])
    enc = encode(tok, ["a b c d e f"], max_length=4)
    assert enc["input_ids"].shape == (1, 4) and enc["input_ids"][0, -1].item() == tok.token_to_id("[SEP]")
    with pytest.raises(ValueError, match="max_length"):
        encode(tok, ["a"], max_length=1)


def test_dataset_collates_into_distiller_batches():
    tok = word_tokenizer(["good", "bad"])
    ds = TextDataset(encode(tok, ["good", "bad", "good bad"]), labels=torch.tensor([1, 0, 1]), teacher_logits=None)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="rows"):
        TextDataset(encode(tok, ["good"]), labels=torch.tensor([1, 0]))


def test_sst2_vocabulary_and_augmentation(shared_dir):
    path = shared_dir / "data" / "sst2" / "validation.jsonl.gz"
    if not path.exists():
        pytest.skip("SST-2 not present")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(200))]
    tok = word_tokenizer(texts)
    transfer = augment(texts[:50], n_iter=4, seed=0)
    enc = encode(tok, transfer, max_length=48)
    unk = tok.token_to_id("[UNK]")
    # replacements come from the corpus, so augmented text stays almost entirely in-vocabulary
    real = enc["attention_mask"].bool()
    assert (enc["input_ids"][real] == unk).float().mean() < 0.01
    assert (enc["input_ids"] == tok.token_to_id("[MASK]")).any()
