"""``asr-kd-lm``: word n-gram LMs for ``decoding=beam_lm``: build one, tune its weights.

``build`` writes an interpolated modified Kneser-Ney ARPA n-gram (:mod:`asr_kd.inference.lm`)
of a prepared data dir's training transcripts (``--data-dir``, ``--subsets``, default train:
never dev or test) and/or any text files (``--text``, one sentence per line, ``.gz`` too).
``tune`` decodes a dev subset with ``beam_lm`` at every ``--lm-weights`` x ``--word-scores``
point (the model runs once; :mod:`asr_kd.evaluation.tune`) and prints the WER of each, best
first, then the overrides that select the best for ``asr-kd-evaluate`` and the flags for
``asr-kd-transcribe``. openslr 11's LMs (``3-gram.pruned.1e-7.arpa.gz``, ``4-gram.arpa.gz``) and
``librispeech-lexicon.txt`` are used as downloaded (``--lm``, ``--lexicon``). ``hlg`` writes the
HLG graph of an ARPA LM and a tokenizer (:mod:`asr_kd.inference.hlg`) for sherpa-onnx's CTC FST
decoder (``asr-kd-evaluate runtime=[onnx,sherpa-onnx-hlg]``), at ``beam_lm``'s weights.
``hotwords`` writes the words of a test subset that training holds at most
``--max-train-count`` times (the realistic case: names) as a hotword file for
``decoding=[beam_lm,beam_lm_hotwords] beam.hotwords=FILE``.

Why argparse, not Hydra: as ``asr-kd-transcribe``, a tool over files with nothing to compose,
that should not make a run directory per call.

Usage:
    asr-kd-lm build --data-dir exp/data --order 3 --out exp/lm/3gram.arpa
    asr-kd-lm build --text extra.txt --data-dir exp/data --order 4 --out exp/lm/4gram.arpa
    asr-kd-lm tune --ckpt exp/student_kd/checkpoints/last.ckpt --data-dir exp/data \\
        --lm exp/lm/3gram.arpa --chunk-ms 320 --lm-weights 0.2,0.5,1,2 --word-scores -1,0,1
    asr-kd-lm hlg --lm exp/lm/3gram.arpa --data-dir exp/data --lm-weight 0.5 --word-score 1 \\
        --out exp/lm/HLG.fst
    asr-kd-lm hotwords --data-dir exp/data --subset test --out exp/lm/hotwords.txt
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from asr_kd.checkpoint import atomic_write
from asr_kd.data.layout import DataDir
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError, MissingFileError, UserError
from asr_kd.evaluation.tune import dev_log_probs, grid_search
from asr_kd.inference.hlg import write_hlg
from asr_kd.inference.hotwords import pick_hotwords, write_hotwords
from asr_kd.inference.lm import build_arpa, subset_texts, text_lines
from asr_kd.inference.search import BeamSettings
from asr_kd.models.loading import load_model
from asr_kd.models.streaming import chunk_frames

__all__ = ["main"]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be numbers separated by commas, got {text!r}"
        ) from None


def _build(args: argparse.Namespace) -> None:
    if args.data_dir is None and not args.text:
        raise ConfigError(
            "asr-kd-lm build needs --data-dir DATA (its training transcripts) or --text FILE"
        )
    sources = [text_lines(path) for path in args.text]
    if args.data_dir is not None:
        sources.append(subset_texts(args.data_dir, args.subsets))
    counts = build_arpa(itertools.chain(*sources), args.out, order=args.order)
    sizes = ", ".join(f"{n}-grams {c}" for n, c in counts.items())
    print(f"{args.out}: {sizes}")


def _tune(args: argparse.Namespace) -> None:
    if not args.ckpt.is_file():
        raise MissingFileError(f"checkpoint not found: {args.ckpt}")
    loaded = load_model(args.ckpt)
    chunk_size, left_chunks = None, -1
    if args.chunk_ms is not None:
        try:
            chunk_size = chunk_frames(loaded.model, args.chunk_ms, "--chunk-ms", str(args.ckpt))
        except ValueError as err:
            raise ConfigError(str(err)) from err
        left_chunks = loaded.model.resolve_left_chunks(args.left_chunks)
    beam = BeamSettings(size=args.beam_size, lm=args.lm, lexicon=args.lexicon)
    utts = dev_log_probs(loaded, str(args.data_dir), args.subset, chunk_size, left_chunks)
    rows = grid_search(utts, loaded.tokenizer, beam, args.lm_weights, args.word_scores)
    print(f"{'lm_weight':>9} {'word_score':>10} {'WER':>7} {'sub':>6} {'del':>6} {'ins':>6}")
    for r in rows:
        print(
            f"{r['lm_weight']:>9g} {r['word_score']:>10g} {r['wer']:>7.2f} "
            f"{r['sub']:>6.2f} {r['del']:>6.2f} {r['ins']:>6.2f}"
        )
    best = rows[0]
    overrides = [f"beam.lm_weight={best['lm_weight']:g}", f"beam.word_score={best['word_score']:g}"]
    print(
        f"best on {args.subset}: {' '.join(overrides)} (asr-kd-transcribe --lm-weight "
        f"{best['lm_weight']:g} --word-score {best['word_score']:g})"
    )
    if args.overrides_out is not None:  # for a recipe: one asr-kd-evaluate override per line
        text = "".join(f"{o}\n" for o in overrides)
        atomic_write(args.overrides_out, lambda f: f.write(text.encode("utf-8")))


def _hlg(args: argparse.Namespace) -> None:
    if (args.data_dir is None) == (args.ckpt is None):
        raise ConfigError("asr-kd-lm hlg needs the tokenizer: --data-dir DATA or --ckpt CKPT")
    if args.ckpt is not None:
        if not args.ckpt.is_file():
            raise MissingFileError(f"checkpoint not found: {args.ckpt}")
        tokenizer = load_model(args.ckpt).tokenizer
    else:
        tokenizer = Tokenizer.load(DataDir(args.data_dir).lang)
    hlg = write_hlg(
        tokenizer, args.lm, args.out, args.lm_weight, args.word_score, args.lexicon, args.cache_dir
    )
    print(f"{args.out}: {hlg.num_states} states, {tokenizer}")


def _hotwords(args: argparse.Namespace) -> None:
    picked = pick_hotwords(
        subset_texts(args.data_dir, [args.subset]),
        subset_texts(args.data_dir, args.train_subsets),
        args.max_train_count,
        args.min_chars,
        args.limit,
    )
    if not picked:
        raise ConfigError(
            f"no word of {args.data_dir} {args.subset} with >= {args.min_chars} characters occurs "
            f"<= {args.max_train_count} times in {args.train_subsets}: raise --max-train-count"
        )
    write_hotwords(args.out, [word for word, _, _ in picked])
    occurrences = sum(n for _, n, _ in picked)
    print(
        f"{args.out}: {len(picked)} hotwords, {occurrences} occurrences in {args.subset} "
        f"(each <= {args.max_train_count} times in {'+'.join(args.train_subsets)}): "
        + " ".join(word for word, _, _ in picked[:10])
        + (" ..." if len(picked) > 10 else "")
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-kd-lm", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write a Kneser-Ney ARPA n-gram")
    build.set_defaults(run=_build)
    build.add_argument("--data-dir", type=Path, help="a data dir written by asr-kd-prepare")
    build.add_argument("--subsets", nargs="+", default=["train"], help="its subsets (train)")
    build.add_argument("--text", type=Path, nargs="+", default=[], help="text files, any")
    build.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    build.add_argument("--out", type=Path, required=True, help="the .arpa file to write")
    tune = commands.add_parser("tune", help="grid of lm_weight x word_score on dev")
    tune.set_defaults(run=_tune)
    tune.add_argument("--ckpt", type=Path, required=True, help="an asr_kd checkpoint")
    tune.add_argument("--data-dir", type=Path, required=True)
    tune.add_argument("--subset", default="dev", help="the subset to tune on (default dev)")
    tune.add_argument("--lm", help="ARPA (.arpa, .arpa.gz) or KenLM binary")
    tune.add_argument("--lexicon", help="words (first column); default: the LM's unigrams")
    tune.add_argument("--chunk-ms", type=int, help="a streaming chunk (default: full context)")
    tune.add_argument("--left-chunks", type=int, help="left context in chunks (model default)")
    tune.add_argument("--lm-weights", type=_floats, default=[0.25, 0.5, 1.0, 2.0])
    tune.add_argument("--word-scores", type=_floats, default=[-1.0, 0.0, 1.0])
    tune.add_argument("--beam-size", type=int, default=BeamSettings.size)
    tune.add_argument(
        "--overrides-out", type=Path, help="write the best as asr-kd-evaluate overrides, one a line"
    )
    hlg = commands.add_parser("hlg", help="HLG.fst for sherpa-onnx's CTC FST decoder")
    hlg.set_defaults(run=_hlg)
    hlg.add_argument("--lm", required=True, help="ARPA (.arpa, .arpa.gz)")
    hlg.add_argument("--data-dir", type=Path, help="the tokenizer: its lang/ (asr-kd-prepare)")
    hlg.add_argument("--ckpt", type=Path, help="the tokenizer: an asr_kd checkpoint's")
    hlg.add_argument("--lexicon", help="words (first column); default: the LM's unigrams")
    hlg.add_argument(
        "--lm-weight",
        type=float,
        default=BeamSettings.lm_weight,
        help="beam_lm's lm_weight (x log10 p), e.g. the one asr-kd-lm tune found",
    )
    hlg.add_argument(
        "--word-score",
        type=float,
        default=BeamSettings.word_score,
        help="beam_lm's word_score (bonus per word)",
    )
    hlg.add_argument("--cache-dir", default=BeamSettings.cache_dir, help="for .arpa.gz")
    hlg.add_argument("--out", type=Path, required=True, help="the .fst file to write")
    hot = commands.add_parser("hotwords", help="pick rare test words as a hotword file")
    hot.set_defaults(run=_hotwords)
    hot.add_argument("--data-dir", type=Path, required=True)
    hot.add_argument("--subset", default="test", help="where the hotwords occur (test)")
    hot.add_argument("--train-subsets", nargs="+", default=["train"], help="(train)")
    hot.add_argument("--max-train-count", type=int, default=1,
                     help="most occurrences in training (default 1: rare or unseen)")  # fmt: skip
    hot.add_argument("--min-chars", type=int, default=4, help="shortest word (default 4)")
    hot.add_argument("--limit", type=int, default=None, help="most hotwords (default: all)")
    hot.add_argument("--out", type=Path, required=True, help="the hotword file to write")
    return p


_NUMBER_LIST = re.compile(r"^-\d")
_LIST_OPTIONS = ("--lm-weights", "--word-scores")


def _joined(argv: Sequence[str]) -> list[str]:
    """``--word-scores -1,0,1`` as ``--word-scores=-1,0,1``: argparse takes ``-1`` for a number
    but ``-1,0,1`` for an unknown option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _LIST_OPTIONS and _NUMBER_LIST.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_joined(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(1)
    try:
        args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
