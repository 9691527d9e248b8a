"""Sweeps and reruns: a grid makes one dir per job and a report compares them; past runs rerun exactly."""

import csv
import json
import re

import pytest
import torch
from omegaconf import OmegaConf

from sidestep.rerun import drift, saved_overrides
from tests.helpers.runs import same_adapter
from tests.helpers.terminal import HANG_GUARD


def test_a_2x2_grid_makes_four_job_dirs_and_a_report(cli, tmp_path, cache_dir, monkeypatch):
    sweep = tmp_path / "sweep"
    monkeypatch.setenv("COLUMNS", "250")  # the printed table unfolded (pytest sets 80)
    proc = cli("-m", "experiment=demo", "adapter.rank=2,4", "optimizer.lr=1e-4,1e-3", "trainer.max_steps=10",
               "trainer.log_every=2", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    configs = sorted(sweep.glob("*/adapter/adapter_config.json"))
    assert len(configs) == 4
    assert sorted(json.loads(p.read_text())["r"] for p in configs) == [2, 2, 4, 4]
    # each job's adapter is named by what varies (issue 27: by its start time), so they can share one loras/ folder
    names = {p.name for p in sweep.glob("*/adapter/comfyui/*.safetensors")}
    assert names == {f"demo-r{r}-lr{lr}.safetensors" for r in (2, 4) for lr in ("1e-4", "1e-3")}, names

    # the sweep writes its report and prints its table itself (issue 27: it ended silently until sidestep.report ran)
    assert f"wrote 4 run page(s) and {sweep / 'report.html'}" in proc.stdout.replace("\n", "")
    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert len(rows) == 4 and all(int(r["steps"]) == 10 for r in rows)
    finals = [float(r["final_loss"]) for r in rows]
    assert finals == sorted(finals)  # best first
    assert sorted(r["overrides"].split()[1] for r in rows) == ["adapter.rank=2", "adapter.rank=2", "adapter.rank=4", "adapter.rank=4"]
    table = [line for line in proc.stdout.splitlines() if "finished" in line]  # its rows, best first
    assert len(table) == 4 and all("adapter.rank=" in line and "optimizer.lr=" in line for line in table)
    assert "★ best" in table[0] and not any("best" in line for line in table[1:]), proc.stdout[-3000:]
    assert (sweep / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((sweep / "sweep.json").read_text())[0]["curve"]) == 5


def test_reruns_reproduce_the_adapter_and_accept_changes(cli, tmp_path, cache_dir):
    """The first run trains a recipe from `--config-dir` (as the wizard's `--out` writes them): both reruns must run
    it the way it ran (issue 20: the rerun found no such recipe; `--config-path` lost the run-dir pattern and the
    log format)."""
    recipes = tmp_path / "recipes"
    (recipes / "experiment").mkdir(parents=True)
    (recipes / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - /experiment/demo\n"
                                                      "trainer: {max_steps: 6}\nsample: {every_n_epochs: null}\n")
    first = tmp_path / "first"
    assert cli("--config-dir", str(recipes), "experiment=mine", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}",
               f"hydra.run.dir={first}").returncode == 0

    report = cli(str(first), app="report")  # a single run is a report of one row
    assert report.returncode == 0 and len(list(csv.DictReader(open(first / "report.csv")))) == 1

    proc = cli("--config-path", str(first / ".hydra"), "--config-name", "config")
    assert proc.returncode == 0, proc.stderr[-2000:]
    exact = next((tmp_path / "outputs").glob("*/*"))
    assert re.fullmatch(r"mine-\d{8}-\d{6}", exact.name)  # the app's run-dir pattern, not Hydra's default
    assert "][INFO] - " not in proc.stdout and re.search(r"^\d\d:\d\d:\d\d INFO adapter written", proc.stdout, re.M)
    assert "dir: outputs/${now:" in (exact / ".hydra" / "config.yaml").read_text()  # and so will its reruns
    assert same_adapter(first, exact)

    proc = cli(str(first), f"hydra.run.dir={tmp_path / 'again'}", app="rerun")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert same_adapter(first, tmp_path / "again")

    proc = cli(str(first), "optimizer=prodigy", "adapter.rank=8", f"hydra.run.dir={tmp_path / 'changed'}", app="rerun")
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = OmegaConf.load(tmp_path / "changed" / ".hydra" / "config.yaml")
    assert saved.optimizer._target_ == "prodigyopt.Prodigy" and saved.adapter.rank == 8
    assert json.loads((tmp_path / "changed" / "adapter" / "adapter_config.json").read_text())["r"] == 8


def test_rerun_refuses_when_the_config_tree_has_drifted(cli, tmp_path, cache_dir):
    run = tmp_path / "run"
    assert cli("experiment=demo", "trainer.max_steps=2", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}",
               f"hydra.run.dir={run}").returncode == 0
    assert drift(run, saved_overrides(run)) == {}
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    saved.timesteps.cfg_ratio = 0.2  # as if conf/timesteps/fixed.yaml had said 0.2 back then
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    assert drift(run, saved_overrides(run)) == {"timesteps.cfg_ratio": (0.2, 0.15)}
    proc = cli(str(run), app="rerun")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: conf/ has changed since {run} ran")
    assert "timesteps.cfg_ratio: run had 0.2, conf/ now gives 0.15" in proc.stderr


@pytest.mark.slow
def test_two_process_launch_writes_one_run_dir_and_replicas_agree(tmp_path, cache_dir):
    """`accelerate launch --multi_gpu` on a machine without GPUs runs 2 CPU processes over gloo."""
    import subprocess
    import sys

    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sidestep.train", "experiment=demo",
         "trainer.max_steps=4", "trainer.save_every_steps=2", f"data.synthetic.cache_dir={cache_dir}",
         f"hydra.run.dir={run}"], capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "LoRA weights identical on all 2 processes" in out
    assert "4 x 1 accumulation x 2 process(es) = 8" in out
    checkpoint = run / "checkpoints" / "step-0000004"
    assert {"random_states_0.pkl", "random_states_1.pkl", "generators_0.safetensors", "generators_1.safetensors"} <= {
        p.name for p in checkpoint.iterdir()}
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()


def test_held_out_loss_is_repeatable_and_leaves_training_alone(make_cfg, tmp_path):
    from sidestep.train import train_adapter

    often = train_adapter(make_cfg("data.val_fraction=0.25", "trainer.max_steps=12", "trainer.log_heavy_every=3"), tmp_path / "a")
    rarely = train_adapter(make_cfg("data.val_fraction=0.25", "trainer.max_steps=12", "trainer.log_heavy_every=50"), tmp_path / "b")
    assert often.val_loss is not None and often.val_loss == rarely.val_loss
    assert same_adapter(tmp_path / "a", tmp_path / "b")  # evaluating 4x instead of once changed nothing
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "a" / "tb")).Reload()
    assert [e.step for e in events.Scalars("loss/val")] == [3, 6, 9, 12]
    noise = events.Scalars("loss/val_noise")[-1].value  # the standard error over the held-out songs
    assert 0 < noise < often.val_loss

    # TensorBoard lists each run once, its hyperparameters with its curves (issue 27: a sub-run for the hparams)
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path)).Reload()
    assert set(runs.Runs()) == {"a/tb", "b/tb"}
    assert set(runs.PluginRunToTagToContent("hparams")) == {"a/tb", "b/tb"}


def test_sweeps_go_under_outputs_beside_single_runs():
    """`tensorboard --logdir outputs` and `sidestep.report outputs` see every run (issue 27: sweeps were in multirun/)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        hydra = compose(config_name="train", return_hydra_config=True).hydra
    assert hydra.run.dir.startswith("outputs/") and hydra.sweep.dir.startswith("outputs/")


def test_optuna_search_runs_its_trials_and_reports_the_best(cli, tmp_path, cache_dir):
    sweep = tmp_path / "optuna"
    # rank 64 does not fit the tiny DiT's 32-wide k_proj: those trials fail, and must not look like results
    proc = cli("-m", "hparams_search=optuna", "experiment=demo", "trainer.max_steps=3", "hydra.sweeper.n_trials=4",
               "adapter.rank=choice(8,64)", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    ranks = [OmegaConf.load(job / ".hydra" / "config.yaml").adapter.rank for job in jobs]
    assert len(jobs) == 4 and sorted(set(ranks)) == [8, 64], ranks  # the search went on past failed trials
    assert proc.returncode == 1 and "failed job(s)" in proc.stderr, proc.stderr[-2000:]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"adapter.rank", "optimizer.lr", "adapter.alpha_ratio", "scheduler.warmup_steps"}
    assert results.best_params["adapter.rank"] == 8
    for job, rank in zip(jobs, ranks):
        state = json.loads((job / "status.json").read_text())["state"]
        assert state == ("failed" if rank == 64 else "finished")
        saved = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert rank == 64 or saved.adapter.alpha == saved.adapter.alpha_ratio * saved.adapter.rank


def test_submitit_local_launcher_runs_a_job_in_a_process_of_its_own(cli, tmp_path, cache_dir):
    """One job: each starts a fresh interpreter (the launcher's own), and the grid itself is the 2x2 test's."""
    sweep = tmp_path / "submitit"
    proc = cli("-m", "hydra/launcher=submitit_local", "experiment=demo", "adapter.rank=4", "trainer.max_steps=2",
               "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    configs = list(sweep.glob("*/adapter/adapter_config.json"))
    assert [json.loads(p.read_text())["r"] for p in configs] == [4]
    assert len(list(sweep.glob(".submitit/*/*_0_result.pkl"))) == 1  # the job ran in submitit's process, not here


def test_launcher_presets_compose():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        for launcher in ("slurm", "parallel"):
            cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}", "experiment=demo"],
                          return_hydra_config=True)
            assert "submitit" in cfg.hydra.launcher._target_ or "joblib" in cfg.hydra.launcher._target_



def test_held_out_songs_are_never_trained_on(make_cfg, tmp_path):
    """One epoch of the training loader and the held-out loader together hold every song exactly once."""
    from sidestep.data.loader import open_dataset
    from sidestep.models.source import model_source
    from sidestep.training.setup import set_up_run

    cfg = make_cfg("data.val_fraction=0.25")
    with set_up_run(cfg, tmp_path / "run", model_source(cfg.model)) as run:
        trained = [n for batch in run.loader for n in batch["names"]]
        held_out = [n for batch in run.held_out.loader for n in batch["names"]]
    assert len(held_out) == round(0.25 * len(open_dataset(cfg).files))
    assert sorted(trained + held_out) == sorted(p.name for p in open_dataset(cfg).files)


def test_replicas_that_end_with_different_weights_stop_the_run():
    """The check the two-process run above passes: a replica whose LoRA weights differ in the last bit is caught."""
    import pytest

    from sidestep.errors import SidestepError
    from sidestep.training.loop import _check_replicas_agree

    class TwoProcesses:
        num_processes, device = 2, torch.device("cpu")

        def __init__(self, drift: float):
            self.drift = drift

        def gather(self, checksum):  # process 1's checksum beside process 0's
            return torch.cat([checksum, checksum + self.drift])

    params = [torch.full((3, 2), 0.1), torch.ones(4)]
    _check_replicas_agree(TwoProcesses(0.0), params)
    with pytest.raises(SidestepError, match="^the 2 processes ended with different LoRA weights"):
        _check_replicas_agree(TwoProcesses(1e-12), params)


def test_a_search_that_cannot_run_ends_in_one_line(cli, tmp_path, cache_dir):
    """Issue 27: the README's Optuna command failed every trial, then ended in `ValueError: No trials are completed
    yet.` A base config every trial shares is refused before the first trial; trials that all fail end in the list
    of failed jobs."""
    refused = cli("-m", "hparams_search=optuna", "data.dataset_dir=./tensors/jazz", "hydra.sweeper.n_trials=2",
                  f"hydra.sweep.dir={tmp_path / 'refused'}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert refused.stderr.startswith("error: the search's base config is refused, so the sweep does not start: "
                                     "data.dataset_dir: "), refused.stderr
    assert not (tmp_path / "refused" / "0").exists()

    failing = cli("-m", "hparams_search=optuna", "experiment=demo", "adapter.dropout=choice(0.7,0.9)",
                  "hydra.sweeper.n_trials=2", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}",
                  f"hydra.sweep.dir={tmp_path / 'failing'}")
    assert failing.returncode == 1 and "Traceback" not in failing.stderr, failing.stderr[-2000:]
    assert "finished with 2 failed job(s)" in failing.stderr and "adapter.dropout" in failing.stderr


def test_the_slurm_launcher_without_slurm_is_one_line(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_module

    from sidestep.errors import SidestepError
    from sidestep.training.sweep_plan import check_launcher

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        check_launcher(cfg)
        raise AssertionError("no sbatch, yet the SLURM launcher was let through")
    except SidestepError as err:
        assert str(err).startswith("hydra/launcher=slurm needs SLURM, and sbatch is not on this machine's PATH")
    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    check_launcher(cfg)  # on a login node it goes ahead


def test_a_sweep_reads_its_jobs_models_shape_from_the_checkpoint_as_the_jobs_do(make_cfg, tmp_path):
    """Issue 27: a sweep on `sidestep.tiny`'s checkpoints (model=turbo, the YAML's 2048 wide) refused every job's
    samples as the wrong shape, which its single runs train on, and showed only "4 unusable sample files in ...:"
    without the files. The plan takes the checkpoint's shape as each job will, and a refusal shows all its lines."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from sidestep.data.loader import dataset_folder
    from sidestep.errors import SidestepError
    from sidestep.models.tiny import write_checkpoints
    from sidestep.training.sweep_plan import plan_sweep

    demo = make_cfg()
    data = dataset_folder(demo)
    write_checkpoints(demo.model, tmp_path / "ckpt")
    common = ["model=turbo", f"model.checkpoint_dir={tmp_path / 'ckpt'}", "data=tensors", "trainer.max_steps=3",
              "sample.every_n_epochs=null", "ui.yes=true"]
    def multirun(*overrides: str):  # what `-m` composes: the typed sweep is in hydra.overrides.task
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = list(overrides) + ["adapter.rank=4,8"]
        return cfg

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        plan = plan_sweep(multirun(*common, f"data.dataset_dir={data}"), "train")
        assert [job.refused for job in plan.jobs] == [None, None] and plan.total_steps == 6

        (tmp_path / "bad").mkdir()
        for name in ("a", "b"):
            (tmp_path / "bad" / f"{name}.pt").write_bytes(b"not a tensor")
        try:
            plan_sweep(multirun(*common, f"data.dataset_dir={tmp_path / 'bad'}"), "train")
            raise AssertionError("a sweep whose every job is refused was let through")
        except SidestepError as err:
            assert "2 unusable sample files" in str(err) and "a.pt" in str(err) and "b.pt" in str(err), str(err)


def test_a_sweep_job_is_announced_in_our_format_with_only_what_varies(monkeypatch, caplog):
    """Issue 27: a sweep printed Hydra's `[HYDRA] Launching 2 jobs locally` and `[HYDRA] \\t#0 : <every override>` in
    its own format. Hydra's launcher speaks only when something is wrong; each job gets one line of ours."""
    import logging

    from hydra import compose, initialize_config_module
    from hydra.types import RunMode
    from omegaconf import open_dict

    from sidestep.config.run_name import SWEEP_VARIES
    from sidestep.ui.sweep import SweepCallbacks

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=demo", "adapter.rank=8"], return_hydra_config=True)
    assert cfg.hydra.hydra_logging.root.level == "WARNING"
    assert cfg.hydra.job_logging.loggers.get("hydra") is None  # the launcher's INFO lines stay below the root's WARNING
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num = RunMode.MULTIRUN, 1
    monkeypatch.setenv(SWEEP_VARIES, "adapter.rank")
    with caplog.at_level(logging.INFO, logger="sidestep"):
        SweepCallbacks().on_job_start(cfg, task_function=None)
    assert caplog.messages == ["sweep job 1: adapter.rank=8"]
