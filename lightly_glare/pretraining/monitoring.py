"""Watching a run: progress bar, JSONL and TensorBoard metrics, loss figure.

Step callbacks of :func:`~lightly_glare.pretraining.loop.train_steps` (each
receives a :class:`~lightly_glare.pretraining.loop.StepEvent` after every
optimizer step). The
one-call :func:`lightly_glare.pretrain` uses all of them; a plain loop passes
the ones it wants::

    metrics = [JsonlMetrics("run/metrics.jsonl"), TensorBoardMetrics("run/tb")]
    callbacks = [*metrics, ProgressBar()]
    train_steps(model, criterion, loader, config, 16, callbacks=callbacks)
    for callback in metrics:
        callback.close()

Every written value comes from :func:`step_scalars`, so that the JSONL lines
and the TensorBoard scalars of a step are the same numbers (TensorBoard stores
them as float32). Whether the objective teaches shows in the teacher's
entropies, not in the loss (the loss is the teacher's entropy plus the KL to
the student): :class:`UniformTeacherWarning` says when the teacher stays near
uniform, and :func:`teacher_summary` sums a run up.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from lightly_glare.loss import TEACHER_PREFIX
from lightly_glare.models.defaults import MOMENTUM_START
from lightly_glare.pretraining.loop import StepEvent

#: Scalar tags: the total loss, one per loss term (``loss/<term>``), the
#: schedules and the speed.
LOSS_TAG = "loss/total"
TERM_PREFIX = "loss/"


def step_scalars(event: StepEvent) -> dict[str, float]:
    """The scalars logged for a step, by tag.

    Args:
        event: The finished step.

    Returns:
        ``loss/total``, ``loss/<term>`` for every computed term, the teacher
        diagnostics ``teacher/<term>/{entropy,batch_entropy,kl}`` (fractions
        of log K; :func:`~lightly_glare.loss.statistics_scalars`),
        ``train/lr``, ``train/momentum``, ``speed/images_per_s`` (this step)
        and ``speed/data_wait`` (share of the step's time spent waiting for
        the batch, 0 to 1).
    """
    seconds = max(event.step_seconds, 1e-9)
    return {
        LOSS_TAG: event.loss,
        **{f"{TERM_PREFIX}{name}": value for name, value in event.terms.items()},
        **event.teacher,
        "train/lr": event.lr,
        "train/momentum": event.momentum,
        "speed/images_per_s": event.images / seconds,
        "speed/data_wait": event.data_seconds / seconds,
    }


class JsonlMetrics:
    """Writes one JSON line per step: ``{"step": S, TAG: value, ...}``.

    Lines are flushed as they are written, so a crashed run keeps them. To
    continue a run at ``start_step``, the lines of later steps (logged after
    the checkpoint the run resumes from) are removed first.

    Attributes:
        path: The ``.jsonl`` file.
    """

    def __init__(self, path: str | Path, start_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r["step"] <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def __call__(self, event: StepEvent) -> None:
        """Appends the step's line."""
        record = {"step": event.step, **step_scalars(event)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a :class:`JsonlMetrics` file (none if it does not exist).

    Args:
        path: The ``.jsonl`` file.

    Returns:
        One dict per line, in order.

    Raises:
        ValueError: A line is not a JSON object with a ``step``; the message
            names the file and the line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not JSON: {error}") from error
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}:{number} is not a metrics record: {line!r}")
        records.append(record)
    return records


class TensorBoardMetrics:
    """Writes the step scalars as TensorBoard events (``tensorboard --logdir``).

    Needs the ``tensorboard`` package. Continuing a run at ``start_step``
    purges the events of later steps, as :class:`JsonlMetrics` does (a fresh
    run, ``start_step=0``, purges every step left by an earlier run there).

    Attributes:
        log_dir: The event files' folder.
    """

    def __init__(self, log_dir: str | Path, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir), purge_step=start_step + 1)

    def __call__(self, event: StepEvent) -> None:
        """Adds the step's scalars."""
        for tag, value in step_scalars(event).items():
            self._writer.add_scalar(tag, value, global_step=event.step)

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


class ProgressBar:
    """A tqdm bar: step, loss and its terms, images/s, ETA, data-wait share.

    images/s and the data-wait share are averages over the steps this bar has
    seen; tqdm estimates the time left from the step rate.

    Attributes:
        file: Where the bar is drawn (None: standard error).
    """

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file
        self._bar: Any = None
        self._images = 0
        self._seconds = 0.0
        self._waiting = 0.0
        self._started = 0.0

    def __call__(self, event: StepEvent) -> None:
        """Advances the bar to ``event.step``."""
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=event.steps,
                initial=event.step - 1,
                desc="GLARE",
                unit="step",
                file=self.file,
                dynamic_ncols=True,
            )
            self._started = time.perf_counter() - event.step_seconds
        self._images += event.images
        self._seconds += event.step_seconds
        self._waiting += event.data_seconds
        wall = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"loss={event.loss:.4f} "
            + " ".join(f"{k}={v:.3f}" for k, v in event.terms.items())
            + f" {self._images / wall:.1f} img/s"
            + f" data {100 * self._waiting / max(self._seconds, 1e-9):.0f}%",
            refresh=False,
        )
        self._bar.update(1)

    def write(self, line: str) -> None:
        """Prints a line above the bar (a ``log`` function for the run)."""
        from tqdm.auto import tqdm

        tqdm.write(line, file=self.file)

    def close(self) -> None:
        """Closes the bar."""
        if self._bar is not None:
            self._bar.close()


def plot_losses(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Saves the total loss and its terms over the steps as a PNG.

    Args:
        records: Metrics records (:func:`read_metrics`), ordered by step.
        path: The PNG to write.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``records`` is empty.
    """
    if not records:
        raise ValueError(f"No metrics to plot into {path}: the run logged no step.")
    from matplotlib.figure import Figure

    steps = [record["step"] for record in records]
    tags = [tag for tag in records[-1] if tag.startswith(TERM_PREFIX)]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    for tag in tags:
        values = [record.get(tag, math.nan) for record in records]
        total = tag == LOSS_TAG
        axes.plot(
            steps,
            values,
            label=tag.removeprefix(TERM_PREFIX),
            color="black" if total else None,
            linewidth=2 if total else None,
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("GLARE continual pre-training: loss and its terms")
    axes.legend()
    axes.grid(alpha=0.3)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


#: Teacher entropy (fraction of log K) from which a teacher counts as uniform
#: for :class:`UniformTeacherWarning` (ours: within 5 % of log K).
UNIFORM_TEACHER = 0.95


class UniformTeacherWarning:
    """Warns once when the teacher stays near uniform in every term.

    A teacher within a few percent of log K in every term for ``patience``
    steps in a row sends the adapters no signal: the run says so in one line,
    with the fix for each of the two causes measured. Random heads (a
    checkpoint without heads and ``head_init='random'``) are near uniform from
    the first step; fitted or checkpoint heads start sharp, and a teacher that
    follows the student too closely (EMA momentum well below 1 over hundreds
    of steps) collapses to uniform later, frozen heads included.

    Attributes:
        log: The printer of the warning.
        patience: Steps in a row before the warning.
        threshold: Entropy (fraction of log K) from which a teacher counts as
            uniform.
        warned: Whether the warning was given.
    """

    def __init__(
        self,
        log: Callable[[str], None] = print,
        patience: int = 20,
        threshold: float = UNIFORM_TEACHER,
    ) -> None:
        self.log = log
        self.patience = patience
        self.threshold = threshold
        self.warned = False
        self._streak = 0

    def __call__(self, event: StepEvent) -> None:
        """Counts the step; warns at the ``patience``-th uniform step in a row."""
        entropies = [
            value for tag, value in event.teacher.items() if tag.endswith("/entropy")
        ]
        uniform = bool(entropies) and min(entropies) >= self.threshold
        self._streak = self._streak + 1 if uniform else 0
        if self._streak >= self.patience and not self.warned:
            self.warned = True
            self.log(
                f"warning: the teacher has stayed within "
                f"{100 * (1 - self.threshold):.0f} % of uniform (entropy >= "
                f"{self.threshold} log K) in every term for {self._streak} steps "
                f"(up to step {event.step}): the loss sends the adapters no "
                "signal. Fix: with random heads, initialise them from the data "
                "(head_init='data') or start from a checkpoint with heads; with "
                "fitted or checkpoint heads the teacher collapsed: slow it down "
                f"(momentum_start closer to 1, e.g. {MOMENTUM_START}) or train "
                "fewer steps."
            )


def teacher_summary(records: Sequence[dict[str, Any]]) -> list[str]:
    """Lines summing up whether the objective taught, per term.

    For each term: the loss at the first and last step and the teacher's
    entropy, batch entropy and KL (loss = entropy + KL), all as fractions of
    log K.

    Args:
        records: Metrics records (:func:`read_metrics`), ordered by step.

    Returns:
        A header line and one line per term (none without teacher metrics).
    """
    if not records or not any(k.startswith(TEACHER_PREFIX) for k in records[-1]):
        return []
    first, last = records[0], records[-1]
    terms = [
        tag.removeprefix(TEACHER_PREFIX).removesuffix("/entropy")
        for tag in last
        if tag.startswith(TEACHER_PREFIX) and tag.endswith("/entropy")
    ]
    lines = [
        f"  teacher per term, step {first['step']} -> {last['step']}, as fractions "
        "of log K (1 = uniform; loss = entropy + KL; a teacher that teaches has "
        "a low entropy and a high batch entropy):"
    ]
    for term in terms:
        tag = f"{TEACHER_PREFIX}{term}/"
        values = [
            f"{name} {first.get(tag + key, math.nan):.2f} -> {last[tag + key]:.2f}"
            for name, key in (
                ("entropy", "entropy"),
                ("batch entropy", "batch_entropy"),
                ("KL", "kl"),
            )
        ]
        lines.append(f"    {term}: " + ", ".join(values))
    return lines
