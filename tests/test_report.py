"""`sidestep.report` on run folders laid out as training, sweeps and `sidestep.sample` leave them (no model runs)."""

import json
import re
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sidestep.data.audio import write_wav
from sidestep.report.__main__ import main as report
from sidestep.report.run_page import write_run_page
from sidestep.report.runs import find_runs, read_run


def make_run(run: Path, overrides, job: str = "train", status=None, losses=(), held_out=(), noise=None) -> Path:
    """A run dir as Hydra and training leave it: .hydra/, status.json, TensorBoard scalars."""
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"trainer": {"seed": 42}, "lora": {"rank": 4}}, run / ".hydra" / "config.yaml")
    OmegaConf.save(list(overrides), run / ".hydra" / "overrides.yaml")
    OmegaConf.save({"hydra": {"job": {"name": job}}}, run / ".hydra" / "hydra.yaml")
    if status:
        (run / "status.json").write_text(json.dumps(status))
    if losses or held_out:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tb"))
        for step, value in enumerate(losses, 1):
            writer.add_scalar("loss/smoothed", value, step)
        for step, value in enumerate(held_out, 1):
            writer.add_scalar("loss/val", value, step)
            if noise is not None:
                writer.add_scalar("loss/val_noise", noise, step)
        writer.close()
    return run


def make_sample(folder: Path, name: str, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / f"{name}.wav", 0.1 * torch.randn(2, 4800, generator=torch.Generator().manual_seed(0)))
    (folder / f"{name}.json").write_text(json.dumps({"prompt": "warm lofi piano", "lyrics": "[Instrumental]",
                                                     "seed": 0, "duration": 0.1, **info}))


def test_only_training_runs_count_not_sample_or_estimate_folders(tmp_path):
    run = make_run(tmp_path / "outputs" / "day" / "10-00", ["experiment=demo"])
    make_run(run / "samples" / "2026-11-24_10-30", ["source=x"], job="sample")
    make_run(tmp_path / "outputs" / "day" / "11-00", ["experiment=demo"], job="estimate")
    assert find_runs(tmp_path / "outputs") == [run]
    assert find_runs(run) == [run]


def test_a_sweep_report_marks_the_failed_job_and_the_best_by_held_out_loss(tmp_path):
    sweep = tmp_path / "sweep"
    started = {"started_at": 1000.0}
    make_run(sweep / "0", ["experiment=demo", "adapter.rank=4"], status={"state": "finished", **started,
             "updated_at": 1012.3456}, losses=[2.0, 1.5], held_out=[1.3, 1.2])
    make_run(sweep / "1", ["experiment=demo", "adapter.rank=8"], status={"state": "finished", **started,
             "updated_at": 1020.0}, losses=[2.0, 1.3], held_out=[1.5, 1.4])
    make_run(sweep / "2", ["experiment=demo", "adapter.rank=0"],
             status={"state": "failed", "error": "adapter.rank: must be at least 1 (got 0)"})
    report([str(sweep)])

    md = (sweep / "report.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in md[2:]] == ["| 0", "| 1", "| 2"]  # best held-out loss first
    assert "| failed: adapter.rank: must be at least 1 (got 0) |" in md[4]
    assert " | 12 | " in md[2]  # wall seconds, whole
    page = (sweep / "report.html").read_text()
    best_row = re.search(r'<tr class="best">(.*?)</tr>', page).group(1)
    assert 'href="0/report.html"' in best_row and "best" in best_row
    assert "experiment=demo" not in re.search(r"<tbody>(.*)</tbody>", page).group(1)  # rows: only what varies
    assert all((sweep / job / "report.html").is_file() for job in "012")
    assert "adapter.rank: must be at least 1 (got 0)" in (sweep / "2" / "report.html").read_text()


def test_a_run_page_puts_the_base_and_other_strengths_beside_the_checkpoints(tmp_path):
    run = make_run(tmp_path / "run", ["experiment=demo"], status={"state": "running"})
    for step in (4, 2):
        make_sample(run / "samples" / f"step-{step:07d}", "0_warm_lofi_piano", {"step": step, "strength": 1.0})
    checkpoint = str(run / "checkpoints" / "step-0000004")
    adapter = {"source": checkpoint, "adapter": f"{checkpoint}/adapter_model.safetensors"}
    make_sample(run / "samples" / "2026-11-24_10-00", "0_warm_lofi_piano_without", {"source": checkpoint,
                                                                                      "strength": 0.0, "seed": 7})
    later = run / "samples" / "2026-11-24_11-00"
    make_sample(later, "0_warm_lofi_piano_without", {"source": checkpoint, "strength": 0.0})
    make_sample(later, "0_warm_lofi_piano_with", {**adapter, "strength": 1.0})
    make_sample(later, "0_warm_lofi_piano_strength0p5", {**adapter, "strength": 0.5})

    page = write_run_page(read_run(run, tmp_path)).read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions == ["without the adapter (seed 0)", "step 2", "step 4",
                        "step 4 at strength 0.5", "step 4 at strength 1"]
    players = re.findall(r'<audio [^>]*src="([^"]+)"', page)
    assert players[0] == "samples/2026-11-24_11-00/0_warm_lofi_piano_without.wav"  # the same seed as training's
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert len(pictures) == 5 and all((run / p).read_bytes()[:4] == b"\x89PNG" for p in pictures)
    assert '<span class="state running">' in page


def test_sample_points_whose_checkpoint_was_pruned_say_so_and_offer_no_command(tmp_path):
    """Issue 27: ten sample points, three checkpoints left, and the page offered commands for pruned ones. Training
    prunes while the report reads: step 70 goes between listing the checkpoints and writing the page."""
    run = make_run(tmp_path / "run", ["experiment=demo"], status={"state": "running"})
    for step in range(10, 110, 10):
        make_sample(run / "samples" / f"step-{step:07d}", "0_warm_lofi_piano", {"step": step, "strength": 1.0})
    for step in (70, 80, 90, 100):
        (run / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
        (run / "checkpoints" / f"step-{step:07d}" / "trainer_state.json").write_text("{}")
    info = read_run(run, tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-0000070")
    page = write_run_page(info).read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions == [f"step {s} (no checkpoint kept)" for s in range(10, 80, 10)] + ["step 80", "step 90", "step 100"]
    commands = re.findall(r"sidestep.sample (checkpoints/step-\d+)", page)
    assert commands == ["checkpoints/step-0000100", "checkpoints/step-0000090", "checkpoints/step-0000080"]
    assert page.count('preload="metadata"') == 10  # players show their length before they are played


def test_best_is_not_awarded_within_the_held_out_loss_noise(tmp_path):
    """Issue 27: a sweep marked a best job on a held-out difference far smaller than the held-out loss's noise."""
    for noise, marked in ((0.05, False), (0.001, True)):
        sweep = tmp_path / str(noise)
        make_run(sweep / "0", ["adapter.rank=4"], status={"state": "finished"}, losses=[1.5], held_out=[1.20], noise=noise)
        make_run(sweep / "1", ["adapter.rank=8"], status={"state": "finished"}, losses=[1.4], held_out=[1.21], noise=noise)
        report([str(sweep)])
        page = (sweep / "report.html").read_text()
        assert ('<tr class="best">' in page) == marked
        assert ("none is marked best" in page) != marked


def test_the_printed_table_of_runs_never_folds_the_folders_path(tmp_path):
    """Issue 27: the table's title held the sweep's folder, which rich folded mid-name to the table's width
    ("...sweep-05-05-14-82058" / "0, best first"). The title says how many runs; the folder is on the last line, whole."""
    from sidestep.report.write import Report
    from sidestep.ui.console import console
    from sidestep.ui.report_table import print_report

    root = tmp_path / "outputs" / "2026-12-02" / "sweep-05-05-14-820580"
    with console.capture() as captured:
        width = console.width
        console.width = 60
        try:
            print_report(Report(root, [], root / "report.html"))
        finally:
            console.width = width
    lines = captured.get().splitlines()
    assert not any("sweep-05" in line for line in lines[:-1]), lines
    assert lines[-1].startswith("wrote ") and lines[-1].endswith(f"in {root}"), lines


def test_a_lone_run_or_a_tie_has_no_best(tmp_path):
    """Issue 27: `sidestep.report <run>` printed its one run as "★ best", and a sweep whose two jobs ended on the same
    final loss marked one of them best. Best is said only of a run that beat another."""
    from sidestep.report.write import write_report

    single = make_run(tmp_path / "single", ["experiment=demo"], status={"state": "finished"}, losses=[1.5])
    assert write_report(single).best is None
    tie = tmp_path / "tie"
    make_run(tie / "0", ["adapter.rank=4"], status={"state": "finished"}, losses=[1.6785])
    make_run(tie / "1", ["adapter.rank=8"], status={"state": "finished"}, losses=[1.6785])
    assert write_report(tie).best is None
    assert "the first two tie, so none is marked best" in (tie / "report.html").read_text()
    make_run(tie / "2", ["adapter.rank=16"], status={"state": "finished"}, losses=[1.5])
    assert write_report(tie).best.run.label == "2"


def test_samples_rendered_into_a_run_rewrite_its_page(tmp_path):
    """Issue 27: `sidestep.sample RUN compare=true` left report.html as training wrote it, so the comparison it had
    just rendered was not on the page until `sidestep.report` was run by hand. Its last line names the page."""
    from sidestep.sample import refresh_report

    run = make_run(tmp_path / "run", ["experiment=demo"], status={"state": "finished"}, losses=[1.5])
    out = run / "samples" / "2026-12-02_05-08-50"
    make_run(out, ["source=x"], job="sample")
    make_sample(out, "0_warm_lofi_piano_without", {"strength": 0.0})
    make_sample(out, "0_warm_lofi_piano_with", {"strength": 1.0})
    assert refresh_report(out) == run / "report.html"
    assert "0_warm_lofi_piano_without.wav" in (run / "report.html").read_text()
    assert refresh_report(tmp_path / "elsewhere") is None  # hydra.run.dir outside a run: no page to refresh
