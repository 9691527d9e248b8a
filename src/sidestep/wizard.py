"""`python -m sidestep.wizard [overrides] [--out DIR]`: set up a training run by answering a few questions.

Every default is read from the composed config tree (`conf/`, plus any overrides given here, plus the `vram=`
profile the detected GPU suggests), and every answer is checked at once by composing it and running the trainer's
own checks, so a value the trainer would refuse is refused here with the same message. The result is a recipe,
`experiment/<name>.yaml` in the user's config folder (on Hydra's search path; see `user_config.py`) or in `--out DIR`,
holding what differs from the defaults and naming its runs `<name>`, and the one-line command that trains it.
"""

import argparse
import logging
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

from hydra import initialize_config_module
from omegaconf import DictConfig, OmegaConf
from rich.prompt import Confirm
from rich.text import Text

from sidestep.config import LATENT_FPS, register_schemas
from sidestep.config.parts import ADAPTER_SCHEMAS, knobs_of
from sidestep.errors import SidestepError
from sidestep.recipes import (
    Setup,
    choices_of,
    composed,
    config_problem,
    destination,
    group_options,
    is_ours,
    is_shipped,
    leaves_model_and_data,
    recipe,
    verify,
)
from sidestep.ui.console import console, exit_on_user_error, is_interactive, use_plain
from sidestep.ui.gpu import detected_gpu, profile_for
from sidestep.ui.handover import become
from sidestep.ui.questions import Answers, Question, ask_all
from sidestep.ui.songs import offer_analysis
from sidestep.user_config import user_config_dir

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # a file name and the run's name (run.name: no dots)
TINY = "tiny"  # the random-init test model: never a choice for real data
SUGGESTED = ("model", "vram")  # questions whose default is worked out (variant found, GPU detected), not read

QUESTIONS = [
    Question("mode", "Questions", "meta", "basic: paths, model, preset, LoRA size, epochs; advanced: also device, "
             "precision, optimizer, schedule, clipping, data loading, held-out set, early stopping, EMA, checkpoints "
             "and logging"),
    Question("data.dataset_dir", "Dataset folder", "path",
             "preprocessed samples (.pt or .safetensors files), or a folder of songs to preprocess first"),
    Question("model.checkpoint_dir", "ACE-Step checkpoints folder", "path",
             "the folder holding acestep-v15-<variant>/"),
    Question("model", "Model variant", "group",
             "base and sft train best; turbo is distilled; xl_*: the larger XL models; "
             "auto: xl_base > base > xl_sft > sft > xl_turbo > turbo"),
    Question("experiment", "Recipe", "group", "a preset (see the README's preset table), or none"),
    Question("vram", "VRAM profile", "group", lambda a: _gpu_line()),
    Question("adapter", "Adapter type", "group", "lora; dora (LoRA + magnitudes); lokr (smallest files); loha; "
             "oft (rotations) -- see the README's adapter table"),
    Question("model.quantize", "Frozen DiT storage", help="null: the compute dtype (bf16 on a GPU); int8 or nf4: held "
             "by bitsandbytes in 8 or 4 bits, for 8-12 GB cards (the setup summary shows the predicted peak)"),
    Question("adapter.rank", "Adapter rank", help="adapter size: 16 small, 64 typical, 128 large"),
    Question("adapter.alpha", "Adapter alpha", help="strength scale; null: 2 x rank, following the rank"),
    Question("trainer.epochs", "Epochs"),
    Question("trainer.device", "Device", help="auto, cpu, cuda, cuda:N, mps or xpu", advanced=True),
    Question("trainer.precision", "Precision", help="auto, bf16, fp16 or fp32", advanced=True),
    Question("optimizer", "Optimizer", "group", advanced=True),
    Question("optimizer.lr", "Learning rate", advanced=True),
    Question("optimizer.weight_decay", "Weight decay", advanced=True),
    Question("scheduler", "Learning-rate schedule", "group", advanced=True),
    Question("scheduler.warmup_steps", "Warm-up steps", advanced=True),
    Question("trainer.max_grad_norm", "Gradient clipping (max norm)", advanced=True),
    Question("trainer.batch_size", "Batch size", advanced=True),
    Question("trainer.gradient_accumulation", "Gradient accumulation steps", advanced=True),
    Question("data.crop_seconds", "Crop length in seconds", help="null: whole songs", advanced=True),
    Question("data.num_workers", "Data-loader workers", advanced=True),
    Question("data.pin_memory", "Pin memory", advanced=True),
    Question("data.prefetch_factor", "Prefetch factor", advanced=True),
    Question("data.persistent_workers", "Persistent workers", advanced=True),
    Question("data.val_fraction", "Held-out fraction", help="share of the songs scored at fixed noise, never trained "
             "on: 0 off; 0.1 keeps the best checkpoint and allows early stopping", advanced=True),
    Question("trainer.early_stop.patience", "Early stopping patience", help="null: off; evaluations in a row "
             "without improvement before the run ends (needs a held-out fraction > 0)", advanced=True),
    Question("trainer.ema.decay", "EMA of the adapter weights", help="null: off; e.g. 0.999: samples and the adapter "
             "use the smoothed weights", advanced=True),
    Question("trainer.save_every", "Checkpoint every N epochs", advanced=True),
    Question("trainer.log_every", "Log every N steps", advanced=True),
    Question("trainer.log_heavy_every", "Per-layer gradient norms every N steps", advanced=True),
    Question("name", "Recipe name", "meta", "its file name: experiment/<name>.yaml in the config dir"),
]


def as_override(question: Question, value: str) -> Optional[str]:
    if question.kind == "meta" or (question.kind == "group" and value == "none"):
        return None  # Hydra has no `group=null`: a group left at none is left out
    return f"{question.key}={value}"


class Wizard:
    """The session the question engine asks: defaults, choices and checks, all from the config tree."""

    def __init__(self, seed: List[str], out: Path, yes: bool, warnings: "_Warnings"):
        self.seed, self.out, self.yes, self.warnings = seed, out, yes, warnings

    def setup(self, answers: Answers, after: Question) -> Setup:
        """The seed overrides and the group answers (composed by Hydra), then the value answers (merged on top).
        The variant and VRAM suggestions stand in for those questions while they are still to come, so the
        checkpoints folder is checked with the variant that will be offered."""
        groups = [o for q in QUESTIONS
                  if q.kind == "group" and q.key in answers and (o := as_override(q, answers[q.key]))]
        groups += [o for q in QUESTIONS[QUESTIONS.index(after) + 1:] if q.key in SUGGESTED and q.key not in answers
                   and (s := self.default(q, answers)) and (o := as_override(q, s))]
        settings = [s for q in QUESTIONS if q.kind in ("value", "path") and q.key in answers
                    for s in as_settings(q.key, answers[q.key])]
        chosen = {q.key for q in QUESTIONS if q.kind == "group" and q.key in answers}
        return tuple([o for o in self.seed if o.split("=")[0] not in chosen] + groups), tuple(settings)

    def applies(self, question: Question, answers: Answers) -> bool:
        if question.key.startswith("adapter.") and not _has_knob(composed(self.setup(answers, question)), question.key):
            return False  # OFT has no rank or alpha
        return not question.advanced or answers.get("mode") == "advanced"

    def choices(self, question: Question, answers: Answers) -> Optional[List[str]]:
        if question.key == "mode":
            return ["basic", "advanced"]
        if question.kind != "group":
            return None
        options = group_options(question.key)
        if question.key == "model":
            # data and model helpers load torch: imported where an answer needs them, so the first question (and
            # `sidestep.train`, which imports this module) does not wait for it
            from sidestep.models.checkpoints import find_variants, option_name

            found = {option_name(v) for v in find_variants(Path(answers["model.checkpoint_dir"]))} \
                if "model.checkpoint_dir" in answers else set()
            return ["auto"] + [o for o in options if o != "auto" and o != TINY and (not found or o in found)]
        if question.key == "experiment":
            seeded = [o.split("=", 1)[1] for o in self.seed if o.startswith("experiment=")]
            options = [o for o in options if o in seeded or leaves_model_and_data(o, self.out)]
        if question.key == "vram":
            options = sorted(options, key=lambda o: int(re.match(r"\d+", o).group()))
        return (["none"] if question.key in ("experiment", "vram") else []) + options

    def default(self, question: Question, answers: Answers) -> Optional[str]:
        if question.key == "mode":
            return "basic"
        if question.key == "name":
            return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(answers["data.dataset_dir"]).name) or "my_lora"
        setup = self.setup(answers, question)
        if question.key == "vram" and not any(o.startswith("vram=") for o in setup[0]) and _gpu():
            return profile_for(_gpu()[1], group_options("vram"))
        if question.kind == "group":
            chosen = choices_of(setup[0])[question.key]
            if question.key == "model" and chosen not in self.choices(question, answers):
                return "auto"
            return chosen or "none"
        if question.key == "adapter.alpha" and "adapter.rank" in answers:  # keep the alpha / rank ratio of the rank
            rank_question = next(q for q in QUESTIONS if q.key == "adapter.rank")
            before = composed(self.setup({k: v for k, v in answers.items() if k != "adapter.rank"}, rank_question))
            if before.adapter.alpha is not None:  # null follows the rank by itself
                return f"{float(answers['adapter.rank']) * before.adapter.alpha / before.adapter.rank:g}"
        value = OmegaConf.select(composed(setup), question.key)
        if value is None:
            return None if question.kind == "path" else "null"
        return str(value).lower() if isinstance(value, bool) else str(value)

    def check(self, question: Question, value: str, answers: Answers) -> Tuple[Optional[str], List[str]]:
        if question.key == "name":
            return self._check_name(value), []
        if question.kind == "meta":
            return None, []
        later = {q.key for q in QUESTIONS[QUESTIONS.index(question) + 1:]}
        problem = config_problem(self.setup({**answers, question.key: value}, question))
        if problem and problem.split(":")[0] not in later:  # a question still to come is not this answer's fault
            return problem, []
        if question.kind == "path":
            problem, note = path_note(question.key, value)
            return problem, [note] + self.warnings.new()
        return None, self.warnings.new()

    def _check_name(self, name: str) -> Optional[str]:
        if not NAME.fullmatch(name):
            return f"name: {name!r} must be letters, digits, _ or - (it names the recipe file and the run)"
        if is_shipped(name):
            return f"name: {name} is a shipped preset (experiment={name}); pick another name"
        path = self.out / "experiment" / f"{name}.yaml"
        if path.is_file() and not is_ours(path):
            return f"name: {path} is a recipe the wizard did not write; pick another name"
        if path.is_file() and not self.yes and is_interactive() and not Confirm.ask(
                Text(f"  {path} exists; overwrite it?"), default=False, console=console):
            return "name: pick another name"
        return None


def as_settings(key: str, value: str) -> List[str]:
    """An answer as config settings. A dataset folder of songs (not yet preprocessed) becomes what `sidestep.train`
    preprocesses first: `preprocess.audio_dir` and, beside it, `preprocess.out_dir` for the tensors (kept, so the
    next run skips the songs already done)."""
    if key == "data.dataset_dir" and _songs(value):
        return ["data.dataset_dir=null", f"preprocess.audio_dir={value}", f"preprocess.out_dir={tensors_beside(value)}"]
    return [f"{key}={value}"]


def tensors_beside(songs: str) -> str:
    return str(Path(songs).parent / f"{Path(songs).name}-tensors")


@lru_cache(maxsize=None)
def _songs(path: str) -> Tuple[Path, ...]:
    """The audio files of a folder that holds no preprocessed samples (none for a dataset folder, or no folder)."""
    from sidestep.data.audio import find_audio
    from sidestep.data.dataset import list_sample_files

    if not Path(path).is_dir():
        return ()  # the trainer's own check names the missing folder
    try:
        list_sample_files(Path(path))
        return ()
    except SidestepError:
        return tuple(find_audio(Path(path))[0])


def path_note(key: str, path: str) -> Tuple[Optional[str], str]:
    """(problem, what was found): the samples or songs of a dataset folder, the variants of a checkpoints folder."""
    if key == "data.dataset_dir":
        from sidestep.data.dataset import list_sample_files
        from sidestep.data.samples import read_sample

        if _songs(path):
            seconds = [s for s in map(_seconds, _songs(path)) if s is not None]
            if not seconds:
                return f"data.dataset_dir: none of the {len(_songs(path))} audio files in {path} can be read", ""
            unreadable = len(_songs(path)) - len(seconds)
            return None, (f"{len(seconds)} songs, {sum(seconds) / 60:.1f} min of audio, not preprocessed yet: training "
                          f"preprocesses them first into {tensors_beside(path)}"
                          + (f" ({unreadable} more cannot be read: preprocessing lists them and goes on without them)"
                             if unreadable else ""))
        try:
            files = list_sample_files(Path(path))
            frames = sum(read_sample(f)["target_latents"].shape[0] for f in files)
        except SidestepError as err:
            return str(err), ""
        return None, f"{len(files)} samples, {frames / LATENT_FPS / 60:.1f} min of audio"
    from sidestep.models.checkpoints import find_variants

    found = find_variants(Path(path))
    return None, f"variants found: {', '.join(found)}" if found else "a single model folder"


def _seconds(song: Path) -> Optional[float]:
    """Its length, or None when it cannot be read (preprocessing lists it with the reason)."""
    from sidestep.data.audio import audio_seconds

    try:
        seconds = audio_seconds(song)
    except SidestepError:
        return None
    return seconds if seconds * LATENT_FPS >= 2 else None  # preprocessing needs a pair of latent frames


@lru_cache(maxsize=None)
def _gpu() -> Optional[tuple]:
    return detected_gpu()


def _gpu_line() -> str:
    if _gpu() is None:
        return "no CUDA GPU detected: none keeps the config's own settings"
    name, gib = _gpu()
    return f"{name} with {gib:.1f} GiB detected: {profile_for(gib, group_options('vram'))} fits it"


class _Warnings(logging.Handler):
    """The trainer's warnings during checks (Prodigy's rules, say), each shown once as a note, not logged."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen, self.pending = set(), []
        self.logger = logging.getLogger("sidestep")

    def __enter__(self) -> "_Warnings":
        self.logger.addHandler(self)
        self.propagate, self.logger.propagate = self.logger.propagate, False
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self.propagate

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            self.pending.append(f"note: {message}")

    def new(self) -> List[str]:
        notes, self.pending = self.pending, []
        return notes


def set_up(seed: List[str], out: Optional[Path]) -> Tuple[Path, List[str], DictConfig]:
    """Ask, write the recipe, check its command reproduces the answers: (recipe file, command, ui settings)."""
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"), _Warnings() as warnings:
        try:
            ui = composed((tuple(seed), ())).ui
        except Exception as err:  # a bad override on the command line: Hydra's own message
            raise SidestepError(str(err).splitlines()[0]) from None
        use_plain(ui.plain)
        config_dir, extra = destination(out)
        interactive = is_interactive() and not ui.yes
        if interactive:
            console.print("Set up a training run. Enter takes the [default], 'back' returns to the previous question, "
                          "Ctrl-C stops; nothing is written before the last answer.", markup=False, highlight=False)
        wizard = Wizard(seed, config_dir, ui.yes, warnings)
        answers = ask_all(QUESTIONS, wizard, console, interactive)
        if interactive and answers["mode"] == "basic":
            offer_analysis(answers["data.dataset_dir"], ui.plain)
        command = ["python", "-m", "sidestep.train", *extra, f"experiment={answers['name']}"]
        setup = wizard.setup(answers, QUESTIONS[-1])
        if not any(o.startswith("run.name=") for o in seed):  # the recipe names its runs; each run adds its time
            setup = (setup[0], (*setup[1], f"run.name={answers['name']}"))
        started = " ".join(o for o in setup[0] if o.startswith(("experiment=", "vram=")))
        expected = composed(setup)
        path = config_dir / "experiment" / f"{answers['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(recipe(setup, started, shlex.join(command)))
    verify(config_dir, extra, answers["name"], expected)
    return path, command, ui


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.wizard",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("overrides", nargs="*", default=[], help="start from these (group=option, key=value; ui.plain, ui.yes)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="a config dir: write DIR/experiment/NAME.yaml "
                                                                f"(default: your config folder, {user_config_dir()})")
    args = parser.parse_args(argv)
    register_schemas()
    with exit_on_user_error():
        path, command, ui = set_up(args.overrides, args.out)
        console.print(f"\nwrote {path}\ntrain it with:\n  {shlex.join(command)}", markup=False, highlight=False,
                      soft_wrap=True)  # one line to copy, however narrow the terminal
        if ui.yes or (is_interactive() and Confirm.ask("Start training now?", default=True, console=console)):
            become([*command[1:], "ui.yes=true", *["ui.plain=true"] * ui.plain])  # asked once, here


def _has_knob(cfg: DictConfig, key: str) -> bool:
    """Whether the adapter type `cfg` chose has this knob (its schema's)."""
    schema = next((s for s in ADAPTER_SCHEMAS.values() if s._target_ == cfg.adapter._target_), None)
    return schema is not None and key.split(".", 1)[1] in knobs_of(schema)


if __name__ == "__main__":
    main(sys.argv[1:])
