import os

import pytest

from paser.common import console


@pytest.fixture
def bars_restored(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(console, "_bars_shown", console._bars_shown)  # put back as it was


def test_hidden_progress_bars_hide_paser_s_and_the_hugging_face_libraries_bars(bars_restored):
    console.show_progress_bars(False)
    assert console.progress_bar(range(3), desc="tokenise").disable and not console.bars_shown(True)
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"


def test_a_progress_bar_clears_its_line_when_it_closes_and_shows_only_when_asked(bars_restored):
    console.show_progress_bars(True)
    shown = console.progress_bar(total=3, desc="tokenise")
    assert not shown.disable and shown.leave is False
    assert console.progress_bar(total=3, desc="tokenise", show=False).disable
