"""The data layer: windows, labels, leak-free splits, the decoded cache, augmentation, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from physiotouch.data import DataError, TactileDataModule, read_index
from physiotouch.data.augment import augment_clips, shift_hue
from physiotouch.data.cache import build_cache
from physiotouch.data.check import decode_frame
from physiotouch.data.datamodule import make_windows
from physiotouch.data.index import parse_labels
from physiotouch.data.settings import AugmentConfig
from physiotouch.data.splits import SplitConfig, assign_groups, data_version, split_sequences


def dm(root: Path, tmp_path: Path, **kw) -> TactileDataModule:
    args = dict(root=str(root), index=str(root / "index.csv"), image_size=28, batch_size=4,
                cache_dir=str(tmp_path / "cache"), split={"val_fraction": 0.2, "test_fraction": 0.2})
    args.update(kw)
    return TactileDataModule(**args)


def test_window_count_and_frames(tmp_path):
    (tmp_path / "index.csv").write_text("data_fine_banana_digit,0,238\ndata_coarse_x_y_gelsight,5,8\n")
    seqs, problems = read_index(tmp_path / "index.csv")
    assert not problems
    assert [s.num_windows for s in seqs] == [236, 1]  # t in [start+3, end]
    windows, dropped = make_windows(seqs)
    assert len(windows.t) == 237 and dropped == 0
    assert windows.t[0] == 3 and windows.t[235] == 238 and windows.t[236] == 8


def test_labels_from_folder_names_default_and_custom():
    assert parse_labels("data_fine_banana_digit") == {"granularity": "fine", "object": "banana", "sensor": "digit"}
    assert parse_labels("data_coarse_red_cup_duragel")["object"] == "red_cup"
    custom = r"^(?P<sensor>[a-z]+)-(?P<object>\w+)$"
    assert parse_labels("gelsight-mug", custom) == {"granularity": "", "object": "mug", "sensor": "gelsight"}
    assert parse_labels("no-match") is None


def test_split_keeps_every_object_on_every_sensor_together(small_data):
    seqs, _ = read_index(small_data / "index.csv")
    splits = split_sequences(seqs, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=1))
    objects = {k: {s.object for s in v} for k, v in splits.items()}
    assert not (objects["train"] & objects["val"]) and not (objects["train"] & objects["test"])
    assert not (objects["val"] & objects["test"])
    for name, seq_list in splits.items():  # the paired-sensor case: an object's sensors all go the same way
        for obj in objects[name]:
            assert {s.sensor for s in seq_list if s.object == obj} == {"digit", "duragel", "gelsight"}
    assert sum(len(v) for v in splits.values()) == len(seqs)
    again = split_sequences(seqs, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=1))
    assert {k: [s.folder for s in v] for k, v in again.items()} == {k: [s.folder for s in v] for k, v in splits.items()}


def test_k_fold_covers_every_group_once_with_a_fixed_test_set():
    groups = [f"obj{i}" for i in range(11)]
    folds = [assign_groups(groups, SplitConfig(test_fraction=0.2, k_folds=3, fold=f, seed=4)) for f in range(3)]
    assert len({tuple(f["test"]) for f in folds}) == 1
    vals = [g for f in folds for g in f["val"]]
    assert sorted(vals) == sorted(set(groups) - set(folds[0]["test"]))
    for f in folds:
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(groups)
        assert not set(f["train"]) & set(f["val"])


def test_cache_equals_direct_decoding_and_rebuilds_after_a_change(small_data, tmp_path):
    seqs, _ = read_index(small_data / "index.csv")
    seqs = seqs[:3]
    version = data_version(small_data, small_data / "index.csv", seqs)
    cache = build_cache(small_data, seqs, 28, tmp_path / "c", version, log=lambda *_: None)
    for seq in seqs:
        for t in (seq.start + 3, seq.end):
            direct = np.stack([decode_frame(seq.frame_path(small_data, u), 28) for u in range(t - 3, t + 1)])
            assert np.array_equal(cache.window(seq, t), direct)
    # same version -> the same file is reused; a changed frame -> a new version and a rebuilt cache
    assert build_cache(small_data, seqs, 28, tmp_path / "c", version, log=lambda *_: None).path == cache.path
    frame = seqs[0].frame_path(small_data, 5)
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(frame)
    new_version = data_version(small_data, small_data / "index.csv", seqs)
    assert new_version != version
    rebuilt = build_cache(small_data, seqs, 28, tmp_path / "c", new_version, log=lambda *_: None)
    assert rebuilt.path != cache.path and not cache.path.exists()  # the stale cache is removed
    assert (np.asarray(rebuilt.window(seqs[0], 5))[-1] == 200).all()


def test_augmentation_is_identical_across_the_four_frames():
    frame = torch.rand(6, 1, 3, 20, 20)
    clips = frame.expand(-1, 4, -1, -1, -1).clone()
    out = augment_clips(clips, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)
    assert not torch.allclose(out, clips)  # something did change
    again = augment_clips(frame.expand(-1, 4, -1, -1, -1).clone(), AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # reproducible from the generator


def test_hue_shift_equals_the_hsv_round_trip_of_colorsys():
    import colorsys

    x = torch.rand(1, 1, 3, 6, 7)
    x[..., 0, 0] = 0.5  # a grey pixel: hue undefined, must stay grey
    for shift in (-0.3, 0.1, 0.25):
        ours = shift_hue(x, torch.tensor([[shift]]).view(1, 1, 1, 1))
        for i in range(6):
            for j in range(7):
                h, s_, v = colorsys.rgb_to_hsv(*x[0, 0, :, i, j].tolist())
                expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s_, v)
                assert torch.allclose(ours[0, 0, :, i, j], torch.tensor(expected), atol=1e-5), (shift, i, j)


def test_chunking_does_not_change_the_augmentation():
    x = torch.rand(7, 4, 3, 8, 8)
    full = augment_clips(x.clone(), AugmentConfig(), torch.Generator().manual_seed(3), chunk=7)
    chunked = augment_clips(x.clone(), AugmentConfig(), torch.Generator().manual_seed(3), chunk=2)
    assert torch.allclose(full, chunked, atol=1e-6)


def test_flip_only_config():
    x = torch.rand(2, 4, 3, 8, 8)
    cfg = AugmentConfig(hflip=1.0, vflip=0.0, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.equal(augment_clips(x.clone(), cfg, torch.Generator().manual_seed(0)), x.flip(-1))


def test_datamodule_serves_train_and_val_never_test(small_data, tmp_path):
    m = dm(small_data, tmp_path)
    m.setup()
    assert set(m.datasets) == {"train", "val"}
    item = m.datasets["train"][0]
    assert item["clip"].shape == (4, 28, 28, 3) and item["clip"].dtype == torch.uint8
    rec = m.record
    assert set(rec["groups"]["train"]).isdisjoint(rec["groups"]["test"])
    assert rec["windows_used"]["train"] == rec["windows"]["train"]
    # make every test frame unreadable: a fresh data module still sets up, caches and loads
    for folder in rec["sequences"]["test"]:
        for f in (small_data / folder).glob("*.png"):
            f.write_bytes(b"garbage")
    m2 = dm(small_data, tmp_path)
    m2.setup()
    next(iter(torch.utils.data.DataLoader(m2.datasets["val"], batch_size=2)))
    with pytest.raises(DataError, match=r"test split's frames(.|\n)*not a decodable"):
        m2.release_test_dataset()


def _corrupt(root: Path) -> dict[str, Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    paths = {"truncated": folders[0] / "5.png", "empty": folders[1] / "2.png", "missing": folders[2] / "7.png",
             "garbage": folders[3] / "1.png"}
    paths["truncated"].write_bytes(paths["truncated"].read_bytes()[:60])
    paths["empty"].write_bytes(b"")
    paths["missing"].unlink()
    paths["garbage"].write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folders[4] / "3.png")  # other size and mode
    with (root / "index.csv").open("a") as fh:
        fh.write("only_two,fields\ndata_fine_short_digit,4,5\ndata_fine_nofolder_digit,0,9\n")
    paths["odd"] = folders[4] / "3.png"
    return paths


@pytest.mark.slow
def test_check_command_reports_every_problem_with_its_file(small_data):
    paths = _corrupt(small_data)
    run = subprocess.run([sys.executable, "-m", "physiotouch.data", "check", "--root", str(small_data), "--index",
                          str(small_data / "index.csv")], capture_output=True, text=True)
    assert run.returncode == 1
    out = run.stdout
    for key, text in [("truncated", "truncated or corrupt"), ("empty", "zero-byte"), ("missing", "missing frame"),
                      ("garbage", "not a decodable"), ("odd", "unexpected size")]:
        assert f"{paths[key]}: {text}" in out, (key, out)
    index = small_data / "index.csv"
    n = len(index.read_text().splitlines())
    assert f"{index}:{n - 2}: expected 3 fields" in out
    assert f"{index}:{n - 1}: data_fine_short_digit: end (5) must be >= start (4) + 3" in out
    assert f"{index}:{n}: folder '{small_data / 'data_fine_nofolder_digit'}' does not exist" in out


@pytest.mark.slow
def test_synth_then_check_exits_zero_then_one_after_corruption(tmp_path):
    out = tmp_path / "fresh"
    cmd = [sys.executable, "-m", "physiotouch.data"]
    synth = subprocess.run(cmd + ["synth", "--out", str(out), "--objects", "8", "--frames", "6", "--width", "40",
                                  "--height", "30"], capture_output=True, text=True)
    assert synth.returncode == 0, synth.stderr
    seqs, _ = read_index(out / "index.csv")
    assert len(seqs) == 24 and len({s.object for s in seqs}) == 8
    check = cmd + ["check", "--root", str(out), "--index", str(out / "index.csv")]
    assert subprocess.run(check, capture_output=True).returncode == 0
    victim = out / seqs[4].folder / "2.png"
    victim.write_bytes(victim.read_bytes()[:100])
    run = subprocess.run(check, capture_output=True, text=True)
    assert run.returncode == 1 and str(victim) in run.stdout


def test_synthetic_is_deterministic_and_learnable_in_principle(tmp_path):
    from physiotouch.data.synthetic import SynthConfig, generate

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        generate(SynthConfig(out=str(root), num_objects=3, frames=5, width=24, height=18, seed=7))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # consecutive frames move, but frame t+1 is not a copy of frame t
    seq = sorted(p for p in a.iterdir() if p.is_dir())[0]
    f3, f4 = (np.asarray(Image.open(seq / f"{t}.png"), dtype=float) for t in (3, 4))
    assert np.abs(f4 - f3).mean() > 0.5


def test_training_refuses_bad_frames_and_skip_drops_windows(small_data, tmp_path):
    _corrupt(small_data)
    with (small_data / "index.csv").open() as fh:  # keep only the well-formed rows
        rows = [r for r in fh if r.count(",") == 2 and "short" not in r and "nofolder" not in r]
    (small_data / "index.csv").write_text("".join(rows))
    with pytest.raises(DataError, match=r"python -m physiotouch\.data check"):
        m = dm(small_data, tmp_path, split={"val_fraction": 0.0, "test_fraction": 0.0})
        m.setup()
    m = dm(small_data, tmp_path, split={"val_fraction": 0.0, "test_fraction": 0.0}, on_bad_frames="skip")
    m.setup()
    total = sum(s.num_windows for s in read_index(small_data / "index.csv")[0])
    assert m.dropped_windows > 0 and len(m.datasets["train"]) == total - m.dropped_windows
    for i in range(len(m.datasets["train"])):  # no crash in an epoch because of one file
        m.datasets["train"][i]


def test_malformed_index_is_refused_with_line_numbers(small_data, tmp_path):
    with (small_data / "index.csv").open("a") as fh:
        fh.write("data_fine_a_digit,zero,9\n")
    with pytest.raises(DataError, match=r"index.csv:\d+: start and end must be integers"):
        dm(small_data, tmp_path).setup()
    with pytest.raises(DataError, match="does not exist"):
        dm(tmp_path / "nope", tmp_path).setup()


def test_background_removal_leaves_the_contact_and_uses_the_train_split_only(small_data, tmp_path):
    """data.background: first_frame subtracts each recording's first frame; sensor_median the train split's median
    first frame of the sensor (validation never contributes); none is the reference's input. uint8 128 + diff."""
    plain = dm(small_data, tmp_path / "a")
    plain.setup()
    first = dm(small_data, tmp_path / "b", background="first_frame")
    first.setup()
    median = dm(small_data, tmp_path / "c", background="sensor_median")
    median.setup()
    ds, seq = plain.datasets["train"], plain.datasets["train"].sequences[0]
    raw = ds.cache.window(seq, seq.start + 3)  # the recording's first window: frame 0 is its first frame
    got = first.datasets["train"][0]["clip"].numpy()
    expected = np.clip(raw.astype(int) - raw[0].astype(int) + 128, 0, 255)
    assert np.array_equal(got, expected) and np.all(got[0] == 128)
    train_firsts = [ds.cache.window(s, s.start + 3)[0] for s in ds.sequences if s.sensor == seq.sensor]
    assert np.array_equal(median.medians[seq.sensor], np.median(np.stack(train_firsts), 0).round().astype(np.uint8))
    val = median.datasets["val"]
    vseq = next(s for s in val.sequences if s.sensor == seq.sensor)
    i = next(i for i in range(len(val)) if val.sequences[int(val.windows.seq[i])] is vseq)
    vraw = plain.datasets["val"].cache.window(vseq, int(val.windows.t[i]))
    assert np.array_equal(val[i]["clip"].numpy(), np.clip(vraw.astype(int) - median.medians[seq.sensor] + 128, 0, 255))
    with pytest.raises(DataError, match="data.background must be one of"):
        dm(small_data, tmp_path / "d", background="median")
