"""Teacher top-k logit cache: round trip, refusal on mismatch, exactness at k = V, disk cost."""

import json

import pytest
import torch
from torch.utils.data import DataLoader

from distil.distiller import Distiller
from distil.errors import DistilError
from distil.lm.cache import TeacherCache, build_teacher_cache
from distil.lm.topk import unpack_topk
from distil.losses.lm.sparse_token_kd import SparseTokenKD, sparse_token_kd_loss
from distil.losses.lm.token_kl import token_kl_loss
from distil.teacher import CallableTeacher

V = 40
VOCAB = {f"t{i}": i for i in range(V)}  # a plain token -> id map stands in for a tokenizer


@pytest.fixture
def teacher(make_gpt2):
    torch.manual_seed(3)
    return make_gpt2(V, hidden=32).eval()


@pytest.fixture
def sequences():
    gen = torch.Generator().manual_seed(4)
    return [torch.randint(1, V, (n,), generator=gen) for n in (5, 9, 3, 12, 7, 1, 8)]


def live_logits(teacher, ids):
    with torch.no_grad():
        return teacher(input_ids=ids[None]).logits[0]  # (L, V)


def test_round_trip_over_several_shards(tmp_path, teacher, sequences):
    cache = build_teacher_cache(teacher, sequences, tmp_path, k=6, tokenizer=VOCAB, batch_size=3, shard_tokens=10)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["shards"]) > 2 and manifest["num_tokens"] == sum(len(s) for s in sequences)
    assert manifest["k"] == 6 and manifest["vocab_size"] == V and manifest["teacher"]["class"] == "GPT2LMHeadModel"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes left nothing behind
    examples = list(TeacherCache(tmp_path, sequences, tokenizer=VOCAB))
    assert len(examples) == len(sequences) == len(cache)
    for ids, ex in zip(sequences, examples):
        assert torch.equal(ex["input_ids"], ids)
        top = unpack_topk(ex["teacher_logits"])
        want_values, want_ids = live_logits(teacher, ids).topk(6, dim=-1)
        assert torch.equal(top.indices, want_ids)
        assert torch.allclose(top.values, want_values, atol=2e-2)  # float16 storage


def test_refuses_other_data_tokenizer_teacher_or_student(tmp_path, teacher, sequences, make_gpt2):
    build_teacher_cache(teacher, sequences, tmp_path, k=4, tokenizer=VOCAB)
    changed = [s.clone() for s in sequences]
    changed[2][1] = (changed[2][1] + 1) % V
    with pytest.raises(DistilError, match="built for different data"):
        TeacherCache(tmp_path, changed)
    with pytest.raises(DistilError, match="built for different data"):
        TeacherCache(tmp_path, sequences[:-1])
    with pytest.raises(DistilError, match="different tokenizer"):
        TeacherCache(tmp_path, sequences, tokenizer={**VOCAB, "t0": V, "extra": 0})
    with pytest.raises(DistilError, match="another teacher"):
        TeacherCache(tmp_path, sequences, teacher=make_gpt2(V, hidden=32))
    with pytest.raises(DistilError, match="student predicts 41 tokens"):
        TeacherCache(tmp_path, sequences, student=make_gpt2(V + 1))
    with pytest.raises(DistilError, match="another teacher, data set or settings"):
        build_teacher_cache(teacher, changed, tmp_path, k=4, tokenizer=VOCAB)
    with pytest.raises(DistilError, match="no manifest.json"):
        TeacherCache(tmp_path / "nowhere", sequences)


def test_reuse_and_overwrite(tmp_path, teacher, sequences):
    build_teacher_cache(teacher, sequences, tmp_path, k=4)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    build_teacher_cache(teacher, sequences, tmp_path, k=4)  # same request: reused, not rebuilt
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    build_teacher_cache(teacher, sequences, tmp_path, k=4, shard_tokens=10, overwrite=True)
    rebuilt = build_teacher_cache(teacher, sequences[:3], tmp_path, k=4, overwrite=True)
    assert len(rebuilt) == 3 and len(list(tmp_path.glob("shard-*"))) == 1  # stale shards removed


def test_sparse_loss_from_cache_equals_dense_kl_when_k_is_v(tmp_path, teacher, sequences, make_gpt2):
    student = make_gpt2(V, hidden=16)
    data = [{"input_ids": s, "labels": torch.cat([torch.tensor([-100]), s[1:]])} for s in sequences]
    cache = build_teacher_cache(teacher, data, tmp_path, k=V, dtype="float32", temperature=2.0, shard_tokens=16)
    batch = TeacherCache.collate(list(cache))
    labels = batch.pop("labels")
    packed = batch.pop("teacher_logits")
    with torch.no_grad():
        zs = student(**batch).logits
        zt = teacher(**batch).logits
    sparse = SparseTokenKD(temperature=2.0)(zs, packed, labels)
    dense = token_kl_loss(zs[:, :-1], zt[:, :-1], labels[:, 1:], temperature=2.0)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5)
    # Through the Distiller: the batch carries teacher_logits, so the teacher is never called.
    never = CallableTeacher(lambda x: pytest.fail("the cached teacher must not run"))
    distiller = Distiller(student, never, {"kd": SparseTokenKD(temperature=2.0)})
    loader = DataLoader(cache, batch_size=len(sequences), collate_fn=TeacherCache.collate)
    assert distiller(next(iter(loader)))["loss"].item() == pytest.approx(dense.item(), rel=1e-5)


def test_sixteen_bit_cache_is_close_to_dense(tmp_path, teacher, sequences):
    cache = build_teacher_cache(teacher, sequences, tmp_path, k=V, dtype="bfloat16")
    ex = next(iter(cache))
    zt = live_logits(teacher, ex["input_ids"])
    student = torch.randn_like(zt)
    sparse = sparse_token_kd_loss(student, ex["teacher_logits"])
    assert sparse.item() == pytest.approx(token_kl_loss(student, zt).item(), rel=2e-2)


@pytest.mark.parametrize("k,dtype,value_bytes", [(8, "float16", 2), (4, "float32", 4)])
def test_bytes_per_token(tmp_path, teacher, k, dtype, value_bytes):
    gen = torch.Generator().manual_seed(5)
    sequences = [torch.randint(1, V, (50,), generator=gen) for _ in range(20)]  # 1000 tokens, one shard
    cache = build_teacher_cache(teacher, sequences, tmp_path, k=k, dtype=dtype)
    expected = k * value_bytes + 4 * k + 4  # values + int32 ids + float32 tail log-sum-exp
    assert expected <= cache.bytes_per_token() <= expected + 1.0  # header and lengths amortised


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_split_shards_and_shuffle(tmp_path, teacher, sequences):
    build_teacher_cache(teacher, sequences, tmp_path, k=2, shard_tokens=8)
    shuffled = TeacherCache(tmp_path, sequences, shuffle=True, seed=1)
    seen = [ex["input_ids"].tolist() for ex in shuffled]
    assert sorted(seen) == sorted(s.tolist() for s in sequences) and seen != [s.tolist() for s in sequences]
    loader = DataLoader(TeacherCache(tmp_path, sequences), batch_size=None, num_workers=2)
    assert sorted(ex["input_ids"].tolist() for ex in loader) == sorted(s.tolist() for s in sequences)
