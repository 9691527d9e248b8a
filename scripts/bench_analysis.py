"""How often the label analysis (`python -m sidestep.analyze`) gets tempo, key and metre right, on songs whose
answers are known because they are generated here.

Each song is a chord progression in its key (one chord a bar, bass on the strong beats), a melody on the scale and
drums that mark the metre. The set spans 60-180 BPM, all 24 keys and 3/4, 4/4 and 6/8, with swung eighths and
two tempo-octave traps: busy sixteenth-note hi-hats at slow tempos (they sound twice as fast) and a half-time
backbeat at fast ones (it sounds half as fast). Songs are rendered round-robin to WAV, FLAC, MP3 and Ogg Vorbis,
then analysed as a user's folder is. Prints one table:

- tempo: within 2 % of the truth, and apart from that the metrical-level errors (x2, x1/2, x3, x1/3, x3/2, x2/3
  within 2 %: a 6/8 counted in quarter notes is x3/2);
- key: exact, and apart from that the relative, parallel and fifth (dominant or subdominant) confusions;
- metre: the time signature exactly, and apart from that a 6/8 read as 3/4;
- how many of each were flagged (confidence under the default threshold, so not written into a sidecar), and
  how many wrong or near-miss values would have been written all the same;
- CPU seconds of analysis per song.

    python scripts/bench_analysis.py [--songs 48] [--seconds 30] [--seed 0]
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)  # harmonic minor: the raised seventh makes the dominant major, as songs do
PROGRESSIONS = {  # scale degrees (0-based) of each bar's chord
    "major": [(0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4)],
    "minor": [(0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)],
}
METRES = {  # beats a bar, the beat's note value, and where drums fall in beats (kick, snare)
    "3/4": (3, (0.0,), (1.0, 2.0)),
    "4/4": (4, (0.0, 2.0), (1.0, 3.0)),
    "6/8": (2, (0.0,), (1.0,)),  # two dotted-quarter beats a bar, each split in three eighths
}
FORMATS = (".wav", ".flac", ".mp3", ".ogg")


@dataclass(frozen=True)
class Truth:
    tempo: float  # beats a minute: quarter notes in 3/4 and 4/4, dotted quarters in 6/8
    tonic: int  # 0 = C
    mode: str  # major | minor
    metre: str  # 3/4 | 4/4 | 6/8
    swing: bool = False
    trap: Optional[str] = None  # busy_hats | half_time

    @property
    def key(self) -> str:
        return f"{NOTES[self.tonic]} {self.mode}"


def tone(freq: float, seconds: float, rate: int, harmonics: int = 4, decay: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    return wave * np.exp(-decay * t) * np.minimum(1.0, t * 200)


def kick(rate: int) -> np.ndarray:
    t = np.arange(int(0.25 * rate)) / rate
    return np.sin(2 * np.pi * (50 * t + 100 * (1 - np.exp(-30 * t)) / 30)) * np.exp(-t * 14)  # 150 -> 50 Hz


def noise_hit(rate: int, seconds: float, decay: float, rng: np.random.Generator, highpass: bool) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    hit = rng.standard_normal(len(t))
    if highpass:
        hit = np.diff(hit, prepend=0.0)
    return hit * np.exp(-t * decay)


def song(truth: Truth, seconds: float, rate: int, seed: int) -> np.ndarray:
    """Mono float32 audio of a song with these answers."""
    rng = np.random.default_rng(seed)
    beats_per_bar, kicks, snares = METRES[truth.metre]
    beat = 60.0 / truth.tempo
    bar = beats_per_bar * beat
    sub = 3 if truth.metre == "6/8" or truth.swing else 2  # eighths a beat (swing: on the triplet grid)
    scale = MAJOR_SCALE if truth.mode == "major" else MINOR_SCALE
    progression = PROGRESSIONS[truth.mode][seed % 3]
    out = np.zeros(int(seconds * rate) + rate)

    def add(sound: np.ndarray, at: float, gain: float) -> None:
        start = int(at * rate)
        if start < len(out):
            end = min(len(out), start + len(sound))
            out[start:end] += gain * sound[: end - start]

    def pitch(degree: int, octave: int) -> float:
        semitone = truth.tonic + scale[degree % 7] + 12 * (degree // 7)
        return 440.0 * 2 ** ((semitone + 12 * (octave - 4) - 9) / 12)

    snare = noise_hit(rate, 0.2, 25, rng, highpass=False)
    hat = noise_hit(rate, 0.05, 80, rng, highpass=True)
    kick_sound = kick(rate)
    for index in range(int(seconds / bar) + 1):
        start = index * bar
        root = progression[index % len(progression)]
        for third in (0, 2, 4):
            add(tone(pitch(root + third, 4), bar, rate, decay=1.0), start, 0.12)
        add(tone(pitch(root, 2), bar * 0.9, rate, harmonics=6, decay=2.0), start, 0.3)
        for position in kicks:
            add(kick_sound, start + position * beat, 0.9)
        for position in snares if truth.trap != "half_time" else (beats_per_bar / 2,):
            add(snare, start + position * beat, 0.35)
        steps = beats_per_bar * (4 if truth.trap == "busy_hats" else sub)
        for step in range(steps):
            step_beat = step / (steps / beats_per_bar)
            if truth.swing and truth.trap != "busy_hats" and step % 3 == 1:
                continue  # swung eighths: the triplet's middle is silent
            add(hat, start + step_beat * beat, 0.15 if step % (steps // beats_per_bar) else 0.25)
        degree = root + int(rng.integers(0, 3)) * 2  # a chord tone on the bar line, scale steps after it
        for note in range(beats_per_bar):
            if note:
                degree += int(rng.choice((-1, 1, 2, -2)))
            add(tone(pitch(degree % 7, 5), beat * 0.95, rate, harmonics=3, decay=2.5), start + note * beat, 0.18)
    out = out[: int(seconds * rate)]
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def song_set(count: int, seed: int) -> List[Truth]:
    """`count` songs: every key in turn, metres and tempos spread, with swing and octave traps among them."""
    rng = np.random.default_rng(seed)
    truths = []
    for index in range(count):
        tonic, mode = index % 12, ("major", "minor")[(index // 12) % 2]
        metre = ("4/4", "3/4", "4/4", "6/8")[index % 4]
        tempo = float(rng.uniform(60, 180) if metre != "6/8" else rng.uniform(50, 90))
        trap = {4: "busy_hats", 6: "half_time"}.get(index % 8)  # both on 4/4 songs
        if trap == "busy_hats":
            tempo = float(rng.uniform(60, 85))
        if trap == "half_time":
            tempo = float(rng.uniform(130, 180))
        truths.append(Truth(round(tempo, 1), tonic, mode, metre, swing=index % 6 == 2, trap=trap))
    return truths


def write_song(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile

    subtype = {".wav": "PCM_16", ".flac": "PCM_16", ".mp3": "MPEG_LAYER_III", ".ogg": "VORBIS"}[path.suffix]
    soundfile.write(path, audio, rate, subtype=subtype)


def tempo_outcome(found: Optional[float], truth: float) -> str:
    if found is None:
        return "none"
    if abs(found / truth - 1) <= 0.02:
        return "right"
    if any(abs(found / (truth * factor) - 1) <= 0.02 for factor in (2, 0.5, 3, 1 / 3, 1.5, 2 / 3)):
        return "level"
    return "wrong"


def key_outcome(found: Optional[str], truth: Truth) -> str:
    if found is None:
        return "none"
    name, mode = found.split()
    tonic = next(i for i, n in enumerate(NOTES) if n == name or FLATS.get(n) == name)
    if (tonic, mode) == (truth.tonic, truth.mode):
        return "right"
    if mode != truth.mode and tonic == (truth.tonic + (-3 if truth.mode == "major" else 3)) % 12:
        return "relative"
    if mode != truth.mode and tonic == truth.tonic:
        return "parallel"
    if mode == truth.mode and (tonic - truth.tonic) % 12 in (5, 7):
        return "fifth"
    return "wrong"


FLATS = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}


def metre_outcome(found: Optional[str], truth: str) -> str:
    if found is None:
        return "none"
    if found == truth:
        return "right"
    return "family" if (found, truth) == ("3/4", "6/8") else "wrong"


def run(count: int, seconds: float, seed: int) -> Dict:
    from sidestep.analysis.song import analyse_file
    from sidestep.config.schema import AnalyzeSettings

    rate = 44_100
    thresholds = {"tempo": AnalyzeSettings.min_bpm_confidence, "key": AnalyzeSettings.min_key_confidence,
                  "metre": AnalyzeSettings.min_signature_confidence}
    tallies: Dict[str, Dict[str, int]] = {field: {} for field in thresholds}
    cpu = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for index, truth in enumerate(song_set(count, seed)):
            path = Path(folder) / f"song{index:03d}{FORMATS[index % len(FORMATS)]}"
            write_song(path, song(truth, seconds, rate, seed + index), rate)
            began = time.process_time()  # CPU seconds: what a song costs, however busy the machine
            found = analyse_file(path)
            cpu += time.process_time() - began
            estimates = {"tempo": found.tempo, "key": found.key, "metre": found.metre}
            outcome = {"tempo": tempo_outcome(found.tempo.value, truth.tempo),
                       "key": key_outcome(found.key.value, truth),
                       "metre": metre_outcome(found.metre.value, truth.metre)}
            for field, result in outcome.items():
                written = estimates[field].trusted(thresholds[field])
                for tally in (result, "flagged" if not written else "written " + result):
                    tallies[field][tally] = tallies[field].get(tally, 0) + 1
            rows.append({"truth": truth.__dict__, "found": found.as_json(), "outcome": outcome})
    return {"songs": count, "seconds": seconds, "tallies": tallies, "cpu_s_per_song": cpu / count, "rows": rows}


def table(result: Dict) -> str:
    n = result["songs"]
    t = result["tallies"]

    def share(field: str, *outcomes: str) -> str:
        return f"{100 * sum(t[field].get(o, 0) for o in outcomes) / n:.0f} %"

    def harmful(field: str) -> str:
        return share(field, *[o for o in t[field] if o.startswith("written ") and o != "written right"])

    lines = [
        f"{n} songs of {result['seconds']:g} s; {result['cpu_s_per_song']:.2f} CPU seconds of analysis per song",
        "",
        "| estimate | right | near miss | wrong | flagged, not written | written but not right |",
        "|---|---|---|---|---|---|",
        f"| tempo (within 2 %) | {share('tempo', 'right')} | {share('tempo', 'level')} at another metrical level | "
        f"{share('tempo', 'wrong', 'none')} | {share('tempo', 'flagged')} | {harmful('tempo')} |",
        f"| key | {share('key', 'right')} | {share('key', 'relative')} relative, {share('key', 'parallel')} parallel, "
        f"{share('key', 'fifth')} a fifth away | {share('key', 'wrong', 'none')} | {share('key', 'flagged')} | "
        f"{harmful('key')} |",
        f"| time signature | {share('metre', 'right')} | {share('metre', 'family')} 6/8 as 3/4 | "
        f"{share('metre', 'wrong', 'none')} | {share('metre', 'flagged')} | {harmful('metre')} |",
    ]
    return "\n".join(lines)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every song's truth, estimate and outcome here")
    args = parser.parse_args(argv)
    result = run(args.songs, args.seconds, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main(sys.argv[1:])
