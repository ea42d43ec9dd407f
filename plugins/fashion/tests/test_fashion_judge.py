"""The judge: training resumes exactly, weights round-trip through safetensors with their metadata."""

from __future__ import annotations

import pytest
import torch
from composer_fashion.judge import Judge, load_judge, predict, save_judge, train_judge

from composer import ComposerError


def test_resume_is_exact_and_files_round_trip(fake_dir, tmp_path):
    straight, info = train_judge(steps=4, batch_size=8, progress=False)
    assert set(info) >= {"steps", "test_accuracy", "train_cpu_s"} and 0 <= info["test_accuracy"] <= 1
    state = tmp_path / "state.pt"
    train_judge(steps=2, batch_size=8, progress=False, state=state, schedule_steps=4)  # the first half
    resumed, _ = train_judge(steps=4, batch_size=8, progress=False, state=state)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ComposerError, match="past the 3 steps"):
        train_judge(steps=3, batch_size=8, progress=False, state=state)
    save_judge(resumed, tmp_path / "j.safetensors", info)
    loaded, meta = load_judge(tmp_path / "j.safetensors")
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(loaded(x), resumed(x))
    assert meta["test_accuracy"] == info["test_accuracy"] and (tmp_path / "j.json").is_file()
    labels, feats = predict(x, loaded)
    assert labels.shape == (5,) and feats.shape == (5, 128)
    torch.testing.assert_close(labels, loaded(x).argmax(1))


def test_bad_judge_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ComposerError, match="not a fashion judge file"):
        load_judge(tmp_path / "bad.safetensors")
    with pytest.raises(ComposerError, match="not found"):
        load_judge(tmp_path / "none.safetensors")
    assert Judge()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
