"""Resumable ``sample`` and ``fid``: a run stopped by SIGTERM (exit status 143) or killed continues where it stopped,
with the same samples and the same FID bit for bit; folders of another sample set are refused and kept.

On a checkpoint trained for two steps on the digits; FID with the tiny feature extractor.
"""

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import smoke_checkpoint

from ncsn_pl.commands.cli import main
from ncsn_pl.sample_sets.store import SampleStore, missing_batches

CONFIGS = Path(__file__).parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=30"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return smoke_checkpoint(tmp_path_factory.mktemp("fit"))


@pytest.fixture(scope="module")
def straight(checkpoint, tmp_path_factory) -> Path:
    """The output of an uninterrupted ``sample`` run (7 samples, batches of 2, seed 3)."""
    out = tmp_path_factory.mktemp("straight") / "samples"
    main(sample_args(checkpoint, out))
    return out


def sample_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", "--ckpt_path", str(checkpoint), "--num_samples=7", "--batch_size=2", "--seed=3",
            f"--out_dir={out}", *CPU, *extra]  # fmt: skip


def stop_after(monkeypatch, shards: int, how: str) -> None:
    """Stop the next run after ``shards`` shards: a SIGTERM to this process (as a scheduler sends), or a crash while
    the next batch is being written (as a killed job leaves it)."""
    write, written = SampleStore.write_shard, []

    def write_then_stop(self, indices, samples, nfe=None):
        if how == "kill" and len(written) == shards:
            raise KeyboardInterrupt("killed")
        path = write(self, indices, samples, nfe)
        written.append(path)
        if how == "sigterm" and len(written) == shards:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it; the job stops after this batch
        return path

    monkeypatch.setattr(SampleStore, "write_shard", write_then_stop)


def same_outputs(a: Path, b: Path) -> None:
    one, two = np.load(a / "samples.npz"), np.load(b / "samples.npz")
    assert np.array_equal(one["indices"], two["indices"]) and np.array_equal(one["samples"], two["samples"])
    assert sorted(p.name for p in (a / "images").iterdir()) == sorted(p.name for p in (b / "images").iterdir())
    for png in (a / "images").iterdir():
        assert png.read_bytes() == (b / "images" / png.name).read_bytes(), png.name
    assert (a / "grid.png").read_bytes() == (b / "grid.png").read_bytes()


def test_missing_batches_are_the_batches_of_an_uninterrupted_run():
    assert missing_batches(set(), 7, 2) == [[0, 1], [2, 3], [4, 5], [6]]
    assert missing_batches({0, 1, 4, 5}, 7, 2) == [[2, 3], [6]]  # shards are whole batches: the same cut
    assert missing_batches({0, 1, 2, 3, 4, 5, 6}, 7, 2) == []


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_a_stopped_sample_run_continues_to_the_same_samples_bit_for_bit(checkpoint, straight, tmp_path, monkeypatch,
                                                                        how):  # fmt: skip
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        stop_after(patch, 2, how)
        with pytest.raises((SystemExit, KeyboardInterrupt)) as stopped:
            main(sample_args(checkpoint, out))
    if how == "sigterm":
        assert stopped.value.code == 143  # 128 + SIGTERM: a scheduler sees an unfinished job
    assert sorted(p.name for p in (out / "shards").glob("*.npz")) == [
        "00000000-00000001-n2.npz", "00000002-00000003-n2.npz"]  # fmt: skip
    record = json.loads((out / "sample.json").read_text())
    assert record["complete"] is False and not (out / "samples.npz").exists()
    with pytest.raises(ValueError, match="is not complete .*rerun the command"):
        main(["fid", "--images", str(out), "--dataset=digits", *TINY, f"--out={tmp_path / 'f.json'}", *CPU])

    main(sample_args(checkpoint, out))  # the same command again
    record = json.loads((out / "sample.json").read_text())
    assert record["complete"] is True and record["drawn_by_this_run"] == 3  # only what was missing
    same_outputs(straight, out)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sample_run_says_how_to_continue_and_nothing_else(checkpoint, tmp_path, monkeypatch, capsys,
                                                                    caplog, how):  # fmt: skip
    out = tmp_path / "stopped"
    write = SampleStore.write_shard

    def write_then_signal(self, indices, samples, *args, **kwargs):
        path = write(self, indices, samples, *args, **kwargs)
        os.kill(os.getpid(), how)  # a scheduler's SIGTERM, or Ctrl-C
        return path

    with monkeypatch.context() as patch:
        patch.setattr(SampleStore, "write_shard", write_then_signal)
        with pytest.raises(SystemExit) as stopped:
            main(sample_args(checkpoint, out))
    assert stopped.value.code == (143 if how == signal.SIGTERM else 1)
    said = capsys.readouterr().out + caplog.text
    assert f"to {out}; rerun the same command to draw the rest." in said
    assert "--ckpt_path" not in said and "<no checkpoint>" not in said  # no training hint for a sampling run


@pytest.mark.slow  # about 25 s: a run in two ddp_spawn processes
def test_a_run_stopped_in_one_process_continues_in_two_and_back(checkpoint, straight, tmp_path, monkeypatch):
    ddp = ["--trainer.strategy=ddp_spawn", "--trainer.devices=2"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as this process (conftest): a thread count changes float rounding
    out = tmp_path / "samples"
    with monkeypatch.context() as patch:
        stop_after(patch, 1, "sigterm")
        with pytest.raises(SystemExit):
            main(sample_args(checkpoint, out, "--num_samples=4"))
    main(sample_args(checkpoint, out, "--num_samples=4", *ddp))  # [2, 3] on rank 0, nothing on rank 1
    record = json.loads((out / "sample.json").read_text())
    assert (record["world_size"], record["drawn_by_this_run"], record["num_samples"]) == (2, 2, 4)
    main(sample_args(checkpoint, out, *ddp))  # 7 samples now: [4, 5] on rank 0, [6] on rank 1
    assert json.loads((out / "sample.json").read_text())["drawn_by_this_run"] == 3
    # the batches are those of the uninterrupted run (4 is a multiple of the batch size): the same samples
    same_outputs(straight, out)


def test_a_stopped_fid_run_gives_the_fid_of_an_uninterrupted_one(checkpoint, tmp_path, monkeypatch):
    common = ["fid", "--ckpt_path", str(checkpoint), "--num_samples=7", "--batch_size=2", "--seed=3", *TINY,
              f"--quality.cache_dir={tmp_path / 'cache'}", "--quality.precision_recall=true",
              "--quality.pr_neighborhood=2", *CPU]  # fmt: skip
    main([*common, f"--out={tmp_path / 'straight.json'}"])
    straight = json.loads((tmp_path / "straight.json").read_text())
    assert straight["sample_dir"] == str(tmp_path / "straight_samples")
    assert straight["drawn_by_this_run"] == 7 and straight["real"]["from_cache"] is False

    with monkeypatch.context() as patch:
        stop_after(patch, 3, "sigterm")
        with pytest.raises(SystemExit) as stopped:
            main([*common, f"--out={tmp_path / 'resumed.json'}"])
    assert stopped.value.code == 143 and not (tmp_path / "resumed.json").exists()
    main([*common, f"--out={tmp_path / 'resumed.json'}"])
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["drawn_by_this_run"] == 1 and resumed["real"]["from_cache"] is True
    for key in ("fid", "precision", "recall", "num_samples", "num_real", "feature_extractor", "sampler"):
        assert resumed[key] == straight[key], key  # exact
    # the samples are those of the sample command with the same settings
    assert resumed["fid"] == json.loads(json.dumps(straight["fid"]))


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stat_all(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the folder and of everything in it: a file replaced, or a temporary file made and
    removed, shows."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_a_complete_set_is_left_as_it_is(checkpoint, straight, tmp_path, capsys):
    out = tmp_path / "complete"
    shutil.copytree(straight, out)
    before, listing = _stat_all(out), _listing(out)
    capsys.readouterr()
    main(sample_args(checkpoint, out))  # the same command again: nothing to draw, nothing to write
    assert _stat_all(out) == before and _listing(out) == listing  # so it works on a read-only folder too
    assert f"7 samples in {out}, all there already: nothing drawn or written." in capsys.readouterr().out
    # fid on the complete folder reads it and writes only its --out
    main(["fid", "--ckpt_path", str(checkpoint), "--num_samples=7", "--batch_size=2", "--seed=3", f"--sample_dir={out}",
          "--dataset=digits", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'f.json'}",
          *CPU])  # fmt: skip
    assert _stat_all(out) == before and json.loads((tmp_path / "f.json").read_text())["drawn_by_this_run"] == 0


def test_folders_of_another_sample_set_are_refused_and_kept(checkpoint, straight, tmp_path):
    out = tmp_path / "seed3"
    shutil.copytree(straight, out)
    other = tmp_path / "seed4"
    main(sample_args(checkpoint, other, "--num_samples=2", "--seed=4"))
    before = _listing(out)

    # a shard of another seed dropped into the folder
    foreign = out / "shards" / "00000010-00000011-n2.npz"
    foreign.write_bytes((other / "shards" / "00000000-00000001-n2.npz").read_bytes())
    with pytest.raises(ValueError, match=r"Shard .*00000010-00000011-n2.npz belongs to another sample set \(seed 4 "
                                         r"there, 3 here\).* Nothing was deleted"):  # fmt: skip
        main(sample_args(checkpoint, out))
    assert _listing(out) == {**before, "shards/00000010-00000011-n2.npz": foreign.read_bytes()}
    foreign.unlink()

    # another checkpoint (the same run trained further: last.ckpt overwritten) continuing the folder
    changed = tmp_path / "later.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"]["score_net.begin_conv.bias"] += 1.0
    torch.save(saved, changed)
    with pytest.raises(ValueError, match=r"holds another sample set \(checkpoint_sha256 .*last.ckpt \(sha256 .*\) "
                                         r"there, .*later.ckpt \(sha256 .*\) here\)"):  # fmt: skip
        main(sample_args(changed, out))
    with pytest.raises(ValueError, match=r"holds another sample set \(checkpoint_sha256 .*later.ckpt"):
        main(["fid", "--ckpt_path", str(changed), "--num_samples=7", "--batch_size=2", "--seed=3",
              f"--sample_dir={out}", "--dataset=digits", *TINY, f"--out={tmp_path / 'f.json'}", *CPU])  # fmt: skip
    assert _listing(out) == before and not (tmp_path / "f.json").exists()
