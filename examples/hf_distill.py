"""docs/library.md, "Integrations": the same Distiller trained by Hugging Face's `Trainer`.

Needs `transformers` (`pip install "distil[text]"`). On generated sentiment sentences (negation,
"X but Y") a 2-layer BERT teacher is trained, then a 1-layer, half-width BERT student is
distilled from it, both with `DistillationTrainer`; prints the logged loss parts and accuracies.
"""

import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # HF's output_dir goes to a scratch folder

# [start:hf]
import torch
from transformers import TrainingArguments

from distil.data.text import toy_sentiment
from distil.distiller import Distiller, Term
from distil.integrations.hf import DistillationTrainer
from distil.losses import CrossEntropy, HintonKD
from distil.models.hf import hf_bert_classifier

torch.manual_seed(0)
data = toy_sentiment()  # items {"input_ids", "attention_mask", "labels"}, like a tokenized HF data set
vocab = data.model_kwargs["vocab_size"]
teacher = hf_bert_classifier(num_classes=2, vocab_size=vocab, hidden_size=64, num_layers=2, max_length=24)
student = hf_bert_classifier(num_classes=2, vocab_size=vocab, hidden_size=32, num_layers=1, max_length=24)


def arguments(output_dir):
    return TrainingArguments(output_dir, max_steps=150, learning_rate=3e-3, per_device_train_batch_size=32,
                             logging_steps=50, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)


def accuracy(prediction):  # predictions are the student's logits
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


DistillationTrainer(Distiller(teacher, None, {"ce": CrossEntropy()}), args=arguments("runs/teacher"),
                    train_dataset=data.train).train()
distiller = Distiller(student, teacher, {"kd": HintonKD(temperature=2, alpha=0.0), "ce": Term(CrossEntropy(), weight=0.5)})
trainer = DistillationTrainer(distiller, args=arguments("runs/student"), train_dataset=data.train,
                              eval_dataset=data.test, compute_metrics=accuracy)
trainer.train()  # logs loss, kd and ce every 50 steps
print(trainer.evaluate())  # eval_loss (the Distiller's) and eval_accuracy (the student's)
# [end:hf]

teacher_eval = DistillationTrainer(Distiller(teacher, None, {"ce": CrossEntropy()}), args=arguments("runs/teacher"),
                                   eval_dataset=data.test, compute_metrics=accuracy).evaluate()
print(f"teacher test accuracy: {teacher_eval['eval_accuracy']:.1%}")
print(f"student test accuracy: {trainer.evaluate()['eval_accuracy']:.1%}")
