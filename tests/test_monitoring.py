"""Step callbacks of the plain loop: progress bar and JSONL metrics."""

import io
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lightly_glare.pretraining.loop import PretrainConfig, StepEvent, train_steps
from lightly_glare.pretraining.monitoring import (
    JsonlMetrics,
    ProgressBar,
    TensorBoardMetrics,
    plot_losses,
    read_metrics,
)
from tests.test_training import loader, small_model  # noqa: F401  (fixture)


def test_plain_loop_callbacks_see_every_step(
    loader: DataLoader,  # noqa: F811
    tmp_path: Path,
) -> None:
    model, criterion = small_model()
    events: list[StepEvent] = []
    screen = io.StringIO()
    metrics = JsonlMetrics(tmp_path / "m.jsonl")
    stale = TensorBoardMetrics(tmp_path / "tb")  # an earlier run, never resumed
    bar = ProgressBar(file=screen)
    history = train_steps(
        model,
        criterion,
        loader,
        PretrainConfig(steps=3),
        batch_size=2,
        log=bar.write,
        callbacks=[metrics, stale, bar, events.append],
    )
    stale.close()
    fresh = TensorBoardMetrics(tmp_path / "tb")  # a new run in the same folder
    for event in events[:2]:
        fresh(event)
    fresh.close()
    tensorboard = EventAccumulator(str(tmp_path / "tb"))
    tensorboard.Reload()
    assert [e.step for e in tensorboard.Scalars("loss/total")] == [1, 2]
    metrics.close()
    bar.close()
    assert [e.step for e in events] == [1, 2, 3] and events[0].steps == 3
    assert [e.loss for e in events] == history.losses
    assert all(0 <= e.data_seconds <= e.step_seconds for e in events)
    assert all(e.images == 2 and e.optimizer is events[0].optimizer for e in events)
    records = read_metrics(tmp_path / "m.jsonl")
    assert [r["loss/total"] for r in records] == history.losses
    assert "3/3" in screen.getvalue() and "img/s" in screen.getvalue()
    assert "step 3/3" in screen.getvalue()  # the log line, above the bar
    resumed = JsonlMetrics(tmp_path / "m.jsonl", start_step=1)  # keeps step 1
    resumed.close()
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1]
    with pytest.raises(ValueError, match="no step"):
        plot_losses([], tmp_path / "x.png")
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not JSON"):
        read_metrics(tmp_path / "bad.jsonl")
