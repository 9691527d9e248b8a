"""Songs to labels and training data, with their progress displays and outcome tables: the work `analyze`,
`preprocess`, `train` (`preprocess.audio_dir`) and the wizard share, kept below the entry points."""

from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.prompt import Confirm

from sidestep.config.choices import AnalyzePolicy
from sidestep.config.schema import AnalyzeSettings
from sidestep.data.audio_files import SIDECAR_SUFFIXES, find_audio
from sidestep.errors import DataError
from sidestep.ui.analysis_view import show_analysis
from sidestep.ui.console import console
from sidestep.ui.file_progress import FileProgress, show_outcome


def analyse_and_report(songs_dir: str, policy: str, settings: DictConfig, force: bool, plain: bool):
    """Analyse a folder with a progress bar, then show what was measured and written."""
    # librosa (and numba) load here only: no other command pays for them
    from sidestep.analysis.run import analyse_folder

    outcome = analyse_folder(Path(songs_dir), policy, settings, force, partial(FileProgress, plain=plain))
    show_analysis(outcome)
    return outcome


def offer_analysis(folder: str, plain: bool) -> None:
    """The wizard's offer, for a folder of songs none of which has a label file: measure BPM, key and time
    signature into new sidecars before training (nothing is asked for a folder of tensors or of labelled songs)."""
    songs = find_audio(Path(folder))[0] if Path(folder).is_dir() else []
    labelled = (Path(folder) / "dataset.json").is_file() or any(
        song.with_suffix(suffix).is_file() for song in songs for suffix in SIDECAR_SUFFIXES)
    none = "The song has no label file" if len(songs) == 1 else f"None of the {len(songs)} songs has a label file"
    if songs and not labelled and Confirm.ask(
            f"{none}. Measure BPM, key and time signature from the audio "
            "now (a sidecar beside each song, analysis.json in the folder)?", default=True, console=console):
        analyse_and_report(folder, AnalyzePolicy.fill_missing, OmegaConf.structured(AnalyzeSettings), False, plain)


def preprocess_and_report(settings: DictConfig, model_cfg: DictConfig, plain: bool, key_prefix: str = ""):
    """Preprocess with a progress bar per pass, then the outcome table; an error when not one song could be used.
    With `preprocess.analyze` set, the songs' BPM, key and time signature are measured into their sidecars first
    (with the analysis defaults)."""
    if settings.analyze != "off":
        analyse_and_report(settings.audio_dir, settings.analyze, OmegaConf.structured(AnalyzeSettings), False, plain)
    # torch and diffusers are imported where used: a refused config, or a train run without songs, never loads them
    from sidestep.preprocessing.run import preprocess

    outcome = preprocess(settings, model_cfg, partial(FileProgress, plain=plain), key_prefix)
    show_outcome(outcome.processed, outcome.skipped, [(f.path, f.reason) for f in outcome.failed], outcome.out_dir)
    if outcome.usable == 0:
        raise DataError(f"{settings.audio_dir}: no song could be preprocessed (see the reasons above)")
    return outcome
