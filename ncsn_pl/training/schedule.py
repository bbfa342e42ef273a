"""When a sampling callback evaluates (``SampleGrid``, ``SampleQualityMonitor``, ``ToySampleQuality``): every n-th
epoch, every n-th optimizer step, and once more when training ends."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvalSchedule"]


@dataclass(frozen=True)
class EvalSchedule:
    """The evaluation settings of a sampling callback, checked once, and the decisions made from them.

    Epochs are Lightning's 0-based ``current_epoch`` and steps its ``global_step`` (optimizer steps taken).

    Args:
        owner: the callback's name, as the errors give it (``SampleGrid.every_n_epochs ...``).
        every_n_epochs: evaluate at the end of every n-th epoch (0 = not by epoch).
        every_n_steps: evaluate every n-th optimizer step (0 = not by step).
        on_train_end: evaluate once more when training ends.
        off: what the error says 0 means (``never``, ``off``).
        epochs_required: ``every_n_epochs`` must be >= 1 (a callback that evaluates only by epoch).

    Raises:
        ValueError: a negative interval, or ``every_n_epochs`` < 1 where it is required.
    """

    owner: str
    every_n_epochs: int = 0
    every_n_steps: int = 0
    on_train_end: bool = True
    off: str = "never"
    epochs_required: bool = False

    def __post_init__(self) -> None:
        if self.epochs_required and self.every_n_epochs < 1:
            raise ValueError(f"{self.owner}.every_n_epochs must be >= 1, got {self.every_n_epochs}.")
        if self.every_n_epochs < 0 or self.every_n_steps < 0:
            raise ValueError(
                f"{self.owner}.every_n_epochs and every_n_steps must be >= 0 (0 = {self.off}), got "
                f"{self.every_n_epochs}, {self.every_n_steps}."
            )

    def by_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` is an n-th one (epochs n - 1, 2n - 1, ...)."""
        return self.every_n_epochs > 0 and (epoch + 1) % self.every_n_epochs == 0

    def at_step(self, step: int) -> bool:
        """Whether ``step`` is a multiple of ``every_n_steps``."""
        return self.every_n_steps > 0 and step % self.every_n_steps == 0

    def due(self, step: int, epoch: int, last_step: int = -1, last_epoch: int = -1) -> bool:
        """Whether an evaluation is due at ``step`` in ``epoch``, the last one having been at ``last_step`` in
        ``last_epoch`` (-1: none yet): never twice at one step; by epoch in an n-th epoch not evaluated yet; by step
        once a multiple of ``every_n_steps`` has passed since the last (for hooks that do not run at every step)."""
        if step == last_step:
            return False
        by_epoch = self.by_epoch(epoch) and epoch != last_epoch
        by_step = self.every_n_steps > 0 and step // self.every_n_steps > max(last_step, 0) // self.every_n_steps
        return by_epoch or by_step

    def at_train_end(self, step: int, last_step: int = -1) -> bool:
        """Whether to evaluate when training ends at ``step``: asked for, and the last evaluation (at ``last_step``,
        -1: none) was not at this step."""
        return self.on_train_end and step != last_step
