"""A Hugging Face `transformers.Trainer` whose loss is a `Distiller`'s.

The HF Trainer keeps everything it owns (TrainingArguments, devices, mixed precision, DDP,
accumulation, schedules, callbacks, logging, checkpoints); `compute_loss` only calls the Distiller.
Needs `transformers` (`pip install "distil[text]"`).

    trainer = DistillationTrainer(distiller, args=TrainingArguments(...), train_dataset=data)
    trainer.train()
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distil.batch import RESERVED_KEYS
from distil.checkpoint import load_weights, save_weights
from distil.distiller import Distiller

try:
    from transformers import Trainer
except ImportError:
    raise ImportError('distil.integrations.hf needs Hugging Face transformers: pip install "distil[text]"') from None

WEIGHTS_NAME = "model.safetensors"  # HF's SAFE_WEIGHTS_NAME: checkpoint folders look as HF expects
ARGS_NAME = "training_args.bin"
NOT_PARTS = ("loss", "output", "teacher_output")


class DistillationTrainer(Trainer):
    """`transformers.Trainer` training `distiller`'s student from its teacher.

    Args:
        distiller: the Distiller to train; becomes the Trainer's `model`, so HF moves it to the
            device and wraps it (DDP) whole. Its teacher is frozen (no gradient, eval mode) and its
            parameters have `requires_grad=False`, so HF's optimizer holds only the student's and
            the loss adapters'. Call `distiller.setup(batch)` first when a loss has adapters.
        *args, **kwargs: as for `transformers.Trainer` (`args`, `train_dataset`, `eval_dataset`,
            `data_collator`, `compute_metrics`, ...), without `model`.

    Batches are HF dicts (`input_ids`, `attention_mask`, ..., `labels`): the Distiller pops the
    reserved keys (`labels`, `sample_weight`, `indices`, `teacher_logits`) and feeds the rest to
    both models, so the student's own HF loss is never computed. Columns are kept by the
    *student's* forward signature plus those keys, as HF would for the student alone
    (`remove_unused_columns=False` keeps them all). Every loss part is logged beside `loss`
    (its mean since the last log), and evaluation reports the Distiller's loss with the student's
    logits as predictions. Checkpoints hold the student and adapters only (`model.safetensors`,
    keys as in `distiller.trainable()`), not the teacher; `resume_from_checkpoint` loads them back.
    Sharded saving (FSDP, DeepSpeed ZeRO) is not supported.
    """

    def __init__(self, distiller: Distiller, *args: Any, **kwargs: Any):
        if "model" in kwargs or "model_init" in kwargs:
            raise TypeError("DistillationTrainer: pass the Distiller as the first argument, not model= / model_init=")
        super().__init__(distiller, *args, **kwargs)
        self.distiller = distiller
        if self.args.label_names is None:
            self.label_names = ["labels"]  # HF looks for them in the Distiller's forward, which takes a batch
        self._part_sums: dict[str, Tensor] = {}
        self._part_steps = 0

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any):
        """The Distiller's total loss; `model` is the (possibly DDP-wrapped) Distiller."""
        self.distiller.set_epoch(math.floor(self.state.epoch or 0))
        out = model(inputs)
        if model.training:
            for k, v in out.items():
                if k not in NOT_PARTS:
                    self._part_sums[k] = self._part_sums[k] + v if k in self._part_sums else v.detach().clone()
            self._part_steps += 1
        return (out["loss"], {"logits": out["output"]}) if return_outputs else out["loss"]

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None):
        """(Distiller loss, student logits, labels): HF's version would call `model(**inputs)`."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            out = model(inputs)
        loss = out["loss"].detach()
        if prediction_loss_only:
            return loss, None, None
        labels = inputs.get("labels") if isinstance(inputs, dict) else None
        return loss, out["output"].detach(), None if labels is None else labels.detach()

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add each loss part's mean since the last training log (one host sync per log, not per step)."""
        if "loss" in logs and self._part_steps:
            for k, v in self._part_sums.items():
                logs[k if k not in logs else f"loss_{k}"] = v.item() / self._part_steps
            self._part_sums, self._part_steps = {}, 0
        super().log(logs, *args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the columns the student takes plus distil's reserved batch keys."""
        if self._signature_columns is None:
            student = self.distiller.student
            names = list(inspect.signature(student.forward).parameters)
            self._signature_columns = names + ["inputs", *RESERVED_KEYS, "label", "label_ids"]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Student and adapters (not the teacher) as safetensors; tied weights are handled."""
        if state_dict is not None:
            raise NotImplementedError("DistillationTrainer: sharded saving (FSDP, DeepSpeed) is not supported")
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        save_weights(self.accelerator.unwrap_model(self.model).trainable(), folder / WEIGHTS_NAME)
        processor = getattr(self, "processing_class", None)
        if processor is not None:
            processor.save_pretrained(folder)
        torch.save(self.args, folder / ARGS_NAME)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """`resume_from_checkpoint`: the student and adapters back into the Distiller (the teacher is not saved)."""
        load_weights(self.distiller.trainable(), Path(resume_from_checkpoint) / WEIGHTS_NAME)

    def _load_best_model(self) -> None:
        """`load_best_model_at_end`: HF's loader expects the teacher's weights in the file too."""
        self._load_from_checkpoint(self.state.best_model_checkpoint)
