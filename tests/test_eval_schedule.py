"""The evaluation schedule the three sampling callbacks share: its decisions on given steps and epochs, its errors,
and that each callback checks its settings through it with the one-line error it always gave."""

import pytest

from ncsn_pl.training import SampleGrid, SampleQualityMonitor, ToySampleQuality
from ncsn_pl.training.schedule import EvalSchedule


def test_by_epoch_is_every_n_th_epoch_counted_from_one():
    schedule = EvalSchedule("X", every_n_epochs=3)
    assert [epoch for epoch in range(10) if schedule.by_epoch(epoch)] == [2, 5, 8]
    assert not any(EvalSchedule("X").by_epoch(epoch) for epoch in range(10))  # 0: not by epoch
    assert all(EvalSchedule("X", every_n_epochs=1).by_epoch(epoch) for epoch in range(5))


def test_at_step_is_every_multiple_of_n_steps():
    schedule = EvalSchedule("X", every_n_steps=4)
    assert [step for step in range(1, 13) if schedule.at_step(step)] == [4, 8, 12]
    assert not any(EvalSchedule("X", every_n_epochs=1).at_step(step) for step in range(1, 13))


def test_due_by_step_once_a_multiple_has_passed_since_the_last_evaluation():
    schedule = EvalSchedule("X", every_n_steps=5)
    # validations every 3 steps: the first past each multiple of 5 evaluates
    last, evaluated = -1, []
    for step in range(3, 31, 3):
        if schedule.due(step, epoch=0, last_step=last):
            evaluated.append(step)
            last = step
    assert evaluated == [6, 12, 15, 21, 27, 30]
    assert not schedule.due(10, epoch=0, last_step=10)  # never twice at one step
    assert not schedule.due(4, epoch=0) and schedule.due(5, epoch=0)


def test_due_by_epoch_once_per_n_th_epoch():
    schedule = EvalSchedule("X", every_n_epochs=2)
    assert schedule.due(20, epoch=1) and not schedule.due(10, epoch=0)
    assert not schedule.due(21, epoch=1, last_step=20, last_epoch=1)  # that epoch was evaluated already
    assert schedule.due(40, epoch=3, last_step=20, last_epoch=1)
    both = EvalSchedule("X", every_n_epochs=10, every_n_steps=100)
    assert both.due(100, epoch=0) and both.due(95, epoch=9) and not both.due(99, epoch=8)


def test_at_train_end_unless_the_last_evaluation_was_at_that_step():
    assert EvalSchedule("X", on_train_end=True).at_train_end(7)
    assert EvalSchedule("X", on_train_end=True).at_train_end(7, last_step=6)
    assert not EvalSchedule("X", on_train_end=True).at_train_end(7, last_step=7)
    assert not EvalSchedule("X", on_train_end=False).at_train_end(7)


def test_errors_name_the_owner_and_the_settings():
    with pytest.raises(ValueError, match=r"^X.every_n_epochs and every_n_steps must be >= 0 \(0 = never\), got -1, 0."):
        EvalSchedule("X", every_n_epochs=-1)
    with pytest.raises(ValueError, match=r"^X.every_n_epochs and every_n_steps must be >= 0 \(0 = off\), got 1, -2."):
        EvalSchedule("X", every_n_epochs=1, every_n_steps=-2, off="off")
    with pytest.raises(ValueError, match=r"^X.every_n_epochs must be >= 1, got 0\.$"):
        EvalSchedule("X", every_n_epochs=0, epochs_required=True)
    assert EvalSchedule("X", every_n_epochs=1, epochs_required=True).every_n_epochs == 1


def test_the_callbacks_check_their_settings_with_the_errors_they_always_gave():
    with pytest.raises(ValueError, match=r"^SampleGrid.every_n_epochs and every_n_steps must be >= 0 \(0 = never\), "
                                         r"got 0, -1\.$"):  # fmt: skip
        SampleGrid(every_n_steps=-1)
    with pytest.raises(ValueError, match=r"^SampleQualityMonitor.every_n_epochs and every_n_steps must be >= 0 "
                                         r"\(0 = off\), got -1, 0\.$"):  # fmt: skip
        SampleQualityMonitor(every_n_epochs=-1)
    with pytest.raises(ValueError, match=r"^ToySampleQuality.every_n_epochs must be >= 1, got 0\.$"):
        ToySampleQuality(every_n_epochs=0)
    grid = SampleGrid(every_n_epochs=2, every_n_steps=0, on_train_end=False)
    assert grid.schedule == EvalSchedule("SampleGrid", 2, 0, False)
    assert ToySampleQuality(every_n_epochs=5).schedule == EvalSchedule("ToySampleQuality", 5, epochs_required=True)
