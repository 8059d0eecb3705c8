"""``symgrad exercise``: random small networks with one step blanked, reproducible per
seed, and answer keys that ``check`` grades right."""

from __future__ import annotations

from pathlib import Path

import pytest

from symgrad.cli import main
from symgrad.errors import SpecError
from symgrad.learn.exercise import FILES, make_exercise, worksheet_markdown, write_exercise
from symgrad.verify.check import check_formula


def test_same_seed_same_files(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["exercise", "--seed", "3", "-o", str(a)]) == 0
    assert main(["exercise", "--seed", "3", "-o", str(b)]) == 0
    capsys.readouterr()
    for name in FILES:
        ta, tb = (a / name).read_text(), (b / name).read_text()
        assert ta.replace(str(a), "DIR") == tb.replace(str(b), "DIR"), name
    # and a rerun into the same folder replaces its own files
    assert main(["exercise", "--seed", "3", "-o", str(a)]) == 0


def test_a_trailing_slash_is_not_doubled(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["exercise", "--seed", "3", "-o", "ex3/"]) == 0
    cap = capsys.readouterr()
    assert "see ex3/worksheet.md" in cap.out
    assert "wrote ex3/worksheet.md" in cap.err
    assert "//" not in cap.out + cap.err
    for name in FILES:
        assert "ex3//" not in (tmp_path / "ex3" / name).read_text(), name


def test_different_seeds_differ():
    specs = {make_exercise(s).spec for s in range(6)}
    assert len(specs) >= 4


@pytest.mark.parametrize("seed", range(8))
def test_answer_keys_pass_check(seed, tmp_path, capsys):
    ex = make_exercise(seed)
    folder = tmp_path / "ex"
    write_exercise(ex, folder)
    text = (folder / "worksheet.md").read_text()
    assert f"{ex.blank.grad}" in text and "= ?" in text
    blank_lines = [t for t in text.splitlines() if t.startswith(f"{ex.blank.grad}[")]
    blank_lines += [t for t in text.splitlines() if t.startswith(f"{ex.blank.grad} =")]
    assert len(blank_lines) == 2 and all("= ?" in t for t in blank_lines)
    answers = (folder / "answers.md").read_text()
    assert ex.answer in answers and "## Backward pass" in answers
    # graded through the command line against the written spec ...
    spec = str(folder / "network.toml")
    assert main(["check", spec, "--grad", ex.blank.grad, "--formula", ex.answer]) == 0
    assert main(["check", spec, "--grad", ex.blank.grad, "--formula", "0*" + ex.answer]) == 1
    capsys.readouterr()
    # ... and in matrix notation too
    assert check_formula(ex.derivation.network, ex.blank.grad, ex.answer_matrix).ok


def test_blank_can_be_chosen_and_is_validated(tmp_path, capsys):
    ex = make_exercise(1, blank="dW1")
    assert ex.blank.grad == "dW1"
    with pytest.raises(SpecError, match="no gradable step 'dW9'"):
        make_exercise(1, blank="dW9")
    assert main(["exercise", "--seed", "1", "--blank", "dW9", "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert "--blank" in capsys.readouterr().err


def test_latex_worksheet_compiles_shape(tmp_path):
    ex = make_exercise(2)
    write_exercise(ex, tmp_path / "e")
    tex = (tmp_path / "e" / "worksheet.tex").read_text()
    assert "\\begin{document}" in tex and tex.rstrip().endswith("\\end{document}")
    ans = (tmp_path / "e" / "answers.tex").read_text()
    assert "answer key" in ans and ans.rstrip().endswith("\\end{document}")


def test_foreign_files_are_never_overwritten(tmp_path, capsys):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "answers.md").write_text("my own notes\n")
    assert main(["exercise", "--seed", "0", "-o", str(folder)]) == 2
    assert (folder / "answers.md").read_text() == "my own notes\n"
    assert not (folder / "worksheet.md").exists()  # nothing half-written
    assert main(["exercise", "-o", str(tmp_path / "no" / "such")]) == 2
    capsys.readouterr()


@pytest.mark.parametrize("seed", range(8))
def test_the_worksheet_states_the_loss_and_the_functions(seed, tmp_path):
    ex = make_exercise(seed)
    sheet = worksheet_markdown(ex)
    assert "L = " in sheet and "the loss of one sample" in sheet
    assert "A batch's loss is the mean of its samples' losses" in sheet
    for name in ("softplus", "leaky_relu", "relu", "sigmoid", "elu"):
        if f'activation = "{name}"' in ex.spec:
            assert f"{name}(x): " in sheet, name
    if 'activation = "softmax"' in ex.spec:
        assert "exp(" in sheet.split("The loss and the functions used:")[1]


def test_exercise_output_is_all_or_nothing(tmp_path, monkeypatch):
    """A failure while writing (a full disk) leaves no worksheet without its answers."""
    from symgrad.learn import exercise

    real = exercise.atomic_write

    def failing(path, text, **kwargs):
        if Path(path).name == "answers.tex":
            raise OSError(28, "No space left on device")
        return real(path, text, **kwargs)

    monkeypatch.setattr(exercise, "atomic_write", failing)
    out = tmp_path / "ex"
    with pytest.raises(OSError):
        write_exercise(make_exercise(1), out)
    assert not [p.name for p in out.iterdir()] if out.exists() else True
