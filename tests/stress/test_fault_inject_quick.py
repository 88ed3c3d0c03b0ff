"""A few cases of the fault-injection script in ``make test`` (the full count: tests/stress/fault_inject.py)."""

from __future__ import annotations

from tests.stress.fault_inject import run


def test_kills_at_named_phases_resume_identically(tmp_path):
    figures = run(
        n_random=0,
        seed=1,
        work=tmp_path,
        tokens=1024,
        train_steps=30,
        harvest_phases=("commit:2",),
        train_phases=("checkpoint_write:2",),
    )
    assert len(figures.trials) == 2
    for trial in figures.trials:
        assert trial.identical and trial.tokens_lost == 0, trial
    assert all(t.killed for t in figures.trials)
    assert figures.trials[1].detail == "resumed at step 10"  # killed between state-20.pt and its index
