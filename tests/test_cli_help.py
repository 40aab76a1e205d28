"""The help every command prints: Rich renders help text as markup, so a ``[...]`` in a help string is read as a
style tag and vanishes from --help unless it is escaped (``\\[``); defaults that are not a plain value go through
``show_default``."""
from __future__ import annotations

import typer.main
from rich.text import Text
from typer.testing import CliRunner

from sweepbench.cli import app


def _help_texts():
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        yield name, "(command)", command.help or ""
        for param in command.params:
            yield name, param.name, getattr(param, "help", None) or ""


def test_no_help_text_loses_words_to_rich_markup():
    lost = [(cmd, param, text) for cmd, param, text in _help_texts()
            if Text.from_markup(text).plain != text.replace("\\[", "[")]
    assert lost == []


def test_a_bracketed_shape_and_a_described_default_reach_the_help_screen():
    runner = CliRunner()
    logits = runner.invoke(app, ["logits", "--help"], env={"COLUMNS": "200"}).output
    assert "[n_tokens, n_vocab] float32 .npy" in logits
    assert "all cores" in logits
    synth = runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output
    assert "Q4_K for full-size presets, else Q8_0" in synth
