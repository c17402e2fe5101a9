"""The CSV logger of a resumed run: rows up to the checkpoint kept, later ones dropped (the resumed run writes them
again), and an epoch-end summary that a kill lost between the checkpoint and the CSV written from the checkpoint."""

import csv

from physiotouch.training.loggers import ResumableCSVLogger

FIELDS = ["epoch", "epoch/train_loss", "step", "train_loss", "val/objective"]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _resume(tmp_path, resume_from):
    logger = ResumableCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    logger.resume_from = resume_from
    logger.experiment  # noqa: B018  (opening the writer is what trims the file)
    return _rows(tmp_path / "csv" / "metrics.csv")


def test_rows_after_the_checkpoint_are_dropped_and_those_before_kept(tmp_path):
    _write(tmp_path / "csv" / "metrics.csv", [
        {"epoch": 0, "step": 3, "train_loss": 1.0}, {"epoch": 0, "step": 7, "val/objective": 0.9},
        {"epoch": 0, "step": 7, "epoch/train_loss": 0.95}, {"epoch": 1, "step": 11, "train_loss": 0.8}])
    rows = _resume(tmp_path, (8, 0, {"epoch/train_loss": 0.95}))
    assert [(r["step"], r["train_loss"], r["val/objective"], r["epoch/train_loss"]) for r in rows] == [
        ("3", "1.0", "", ""), ("7", "", "0.9", ""), ("7", "", "", "0.95")]  # nothing added: the summary was there


def test_an_epoch_summary_lost_by_a_kill_is_written_from_the_checkpoint(tmp_path):
    _write(tmp_path / "csv" / "metrics.csv", [
        {"epoch": 0, "step": 3, "train_loss": 1.0}, {"epoch": 0, "step": 7, "val/objective": 0.9}])
    rows = _resume(tmp_path, (8, 0, {"epoch/train_loss": 0.95}))
    assert len(rows) == 3 and rows[-1]["step"] == "7" and rows[-1]["epoch"] == "0"
    assert float(rows[-1]["epoch/train_loss"]) == float(__import__("numpy").float32(0.95))  # as Lightning logs it


def test_a_mid_epoch_checkpoint_adds_no_summary(tmp_path):
    _write(tmp_path / "csv" / "metrics.csv", [{"epoch": 1, "step": 9, "train_loss": 1.0}])
    assert len(_resume(tmp_path, (10, 1, {}))) == 1
