"""`--help` as a newcomer reads it: every command listed at the top, whole sentences, a command's own options first."""

import inspect
import re

import lightning.pytorch as pl
import pytest

from ncsn_pl.__main__ import TOOLS, main
from ncsn_pl.commands.cli import NCSNCLI, NCSNTrainer
from ncsn_pl.commands.help import first_sentence
from ncsn_pl.training import ResumableCheckpoint, ScoreModel, optimizers

COMMANDS = list(NCSNCLI.subcommands())
ABBREVIATIONS = ("e.g.", "i.e.", "ie.", "ie:.", "eg.", "cf.")


def without_tail(help: str) -> str:
    """A help text without jsonargparse's ``(required, type: ..., default: ...)`` at its end."""
    start = max(help.rfind(" (type: "), help.rfind(" (required"))
    return help[: start if start >= 0 else len(help)]


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


def option_helps(text: str) -> dict[str, str]:
    """``{option: its help text}`` of a jsonargparse/argparse help (options at column 2, help at column 24)."""
    helps: dict[str, str] = {}
    option = None
    for line in text.splitlines():
        if re.match(r"^  \S", line):
            option = line.split()[0].rstrip(",")
            rest = line[24:] if len(line) > 24 and line[22:24] == "  " and line[24] != " " else ""
            helps[option] = rest.strip()
        elif option and line.startswith(" " * 24):
            helps[option] = (helps[option] + " " + line.strip()).strip()
        else:
            option = None
    return helps


def section_titles(text: str) -> list[str]:
    return [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]


def test_top_level_help_says_what_ncsn_pl_is_and_lists_every_command(capsys):
    text = help_text(capsys)
    assert "ncsn-pl: noise conditional score networks" in text and "Lightning Trainer command line tool" not in text
    listed = re.search(r"\{([a-z_,]+)\}", text).group(1).split(",")
    assert listed == [*COMMANDS, *TOOLS] and "predict" not in listed
    assert set(listed) == {"fit", "validate", "test", "sample", "fid", "fid_nfe", "sweep", "compare", "convert"}
    lines = dict(re.findall(r"^    (\w+) +(\S.*)$", text, flags=re.MULTILINE))
    assert set(lines) == set(listed)  # one line (at least its start) for every command
    assert lines["sweep"].startswith("Run a W&B sweep file") and lines["compare"].startswith("Compare runs by a metric")


@pytest.mark.parametrize("command", [*COMMANDS, *TOOLS])
def test_every_help_text_is_a_whole_sentence(command, capsys):
    text = help_text(capsys, command)
    helps = option_helps(text)
    assert len(helps) > 5
    for option, full in helps.items():
        sentence = without_tail(full)
        if command in TOOLS:  # argparse: the tools' own help texts are phrases without a final full stop
            sentence += "."
        assert sentence.endswith((".", "?", "!")), f"{command} {option}: {full!r}"
        assert not sentence.lower().endswith(ABBREVIATIONS), f"{command} {option}: {full!r}"
        for opening, closing in ("()", "[]", "{}"):
            assert sentence.count(opening) == sentence.count(closing), f"{command} {option}: {full!r}"
        assert sentence.count("``") % 2 == 0, f"{command} {option}: {full!r}"


@pytest.mark.parametrize("command", COMMANDS)
def test_section_titles_are_whole_sentences_of_their_docstrings(command, capsys):
    sources = [NCSNTrainer, ScoreModel, pl.LightningDataModule, ResumableCheckpoint, getattr(NCSNTrainer, command),
               optimizers]  # --optimizer, --lr_scheduler
    docs = [" ".join(inspect.getdoc(source).split()) for source in sources]
    titles = section_titles(help_text(capsys, command))
    assert titles[:2] == ["options", f"{command} options"]  # the command's own options come first
    for title in titles[2:]:
        if title != "Linked arguments":  # the group's title is a whole sentence of a docstring, not its first line
            assert any(re.search(re.escape(title) + r"\.(\s|$)", doc) for doc in docs), title


@pytest.mark.parametrize("command", ["sample", "fid"])
def test_a_command_s_own_options_come_right_after_the_general_ones(command, capsys):
    text = help_text(capsys, command)
    options = list(option_helps(text))
    own = {f"--{name}" for name in inspect.signature(getattr(NCSNTrainer, command)).parameters
           if name not in ("trainer", "model", "datamodule")}  # fmt: skip
    shown = [o for o in options[options.index("--seed_everything") + 1 :] if not o.endswith(".help")]
    assert set(shown[: len(own)]) == own  # fid's --quality group follows its plain options
    assert options.index("--num_samples") < options.index("--trainer.accelerator") < options.index("--model.lr")


def test_the_cut_texts_of_the_issue_read_whole(capsys):
    sample = option_helps(help_text(capsys, "sample"))
    fit = option_helps(help_text(capsys, "fit"))
    assert fit["--model.eps"].startswith("Adam's epsilon (1e-8; NCSNv2's FFHQ used 1e-3).")
    assert sample["--official_config"].startswith(
        "that checkpoint's config (``config.yml``; default: the one beside the checkpoint)."
    )
    assert "(keep it when rerunning, for the same samples bit for bit; another one gives them up to float " \
           "rounding)." in sample["--batch_size"]  # fmt: skip
    assert "e.g. ``(1, 28, 28)``; linked from the DataModule by the CLI." in fit["_data_shape(data)"]


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("Adam's epsilon (1e-8; NCSNv2 used 1e-3). More.", "Adam's epsilon (1e-8; NCSNv2 used 1e-3)."),
        ("the shape, e.g. ``(1, 28)``; linked. Next.", "the shape, e.g. ``(1, 28)``; linked."),
        ("a ``x. y`` literal\nover lines. Then more", "a ``x. y`` literal over lines."),
        ("a phrase with no stop\n\nA second paragraph.", "a phrase with no stop."),
        ("bugs (ie: a unit test). Default: ``False``.", "bugs (ie: a unit test)."),
    ],
)
def test_first_sentence_ends_at_the_first_full_stop_outside_brackets_and_literals(text, sentence):
    assert first_sentence(text) == sentence
