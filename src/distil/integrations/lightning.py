"""A PyTorch Lightning `LightningModule` around a `Distiller`.

Lightning then owns devices, precision, accumulation, logging and checkpoints; the module only
calls the Distiller and logs the loss parts it returns. Needs `pip install "distil[lightning]"`.

    module = DistillationModule(distiller, lambda params: torch.optim.AdamW(params, lr=1e-3))
    lightning.Trainer(max_epochs=5).fit(module, train_loader, val_loader)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from torch import Tensor, nn

from distil.distiller import Distiller
from distil.teacher import call_model

try:
    import lightning.pytorch as pl
except ImportError:
    raise ImportError('distil.integrations.lightning needs PyTorch Lightning: pip install "distil[lightning]"') from None

OptimizerFactory = Callable[[Iterator[nn.Parameter]], Any]
NOT_PARTS = ("loss", "output", "teacher_output")


class DistillationModule(pl.LightningModule):
    """Trains `distiller`'s student (and loss adapters) in Lightning; the teacher stays frozen.

    Args:
        distiller: the Distiller to train. Call `distiller.setup(batch)` first when a loss has
            adapters, so they exist before `configure_optimizers` runs.
        optimizer_factory: `trainable_parameters -> ` anything `configure_optimizers` may return
            (an optimizer, or `{"optimizer": ..., "lr_scheduler": ...}`). It only ever sees the
            student's and adapters' parameters, never the teacher's.

    Logs every loss part as `train/<name>` per step and `val/<name>` per validation epoch
    (`train/loss` is the total), the names distil's own Trainer writes to metrics.jsonl. Term
    schedules (`start_epoch`, `warmup_epochs`) follow Lightning's `current_epoch`. Lightning's
    "Found N module(s) in eval mode" warning at the start of fit counts the frozen teacher.
    """

    def __init__(self, distiller: Distiller, optimizer_factory: OptimizerFactory):
        super().__init__()
        self.distiller = distiller
        self.optimizer_factory = optimizer_factory

    def forward(self, inputs: Any) -> Any:
        """The student's prediction, for `predict_step` and inference."""
        return call_model(self.distiller.student, inputs)

    def on_train_epoch_start(self) -> None:
        self.distiller.set_epoch(self.current_epoch)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        out = self.distiller(batch)
        self._log_parts("train", out)
        return out["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._log_parts("val", self.distiller(batch))

    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(self.distiller.trainable_parameters())

    def _log_parts(self, stage: str, out: dict[str, Tensor]) -> None:
        """Every loss part, weighted and detached as the Distiller returns them (they sum to `loss`)."""
        size = out["output"].shape[0]  # Lightning cannot always infer it from a dict batch
        self.log(f"{stage}/loss", out["loss"].detach(), batch_size=size, prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in out.items() if k not in NOT_PARTS}, batch_size=size)
