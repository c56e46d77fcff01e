"""``asr-kd-export format=sherpa-onnx``: a streaming student for ``sherpa_onnx.OnlineRecognizer``.

`sherpa-onnx <https://github.com/k2-fsa/sherpa-onnx>`_ (the k2-fsa C++ runtime on ONNX Runtime:
Linux, Android, iOS, Raspberry Pi, WebAssembly) loads three streaming CTC formats. We write its
**WeNet CTC** one (``OnlineRecognizer.from_wenet_ctc``), because it is the one built for our
encoder: a chunk-wise Conformer with a fixed attention cache of ``num_left_chunks`` chunks and a
causal-conv cache, which is exactly our step graph (:mod:`asr_kd.models.streaming`). NeMo's
streaming CTC wants a cache-aware FastConformer's caches and its own (per-feature normalised)
features; Zipformer2's wants Zipformer's ~7 state tensors per layer.

The directory (``model.onnx``, ``tokens.txt``) is what ``from_wenet_ctc(tokens, model,
chunk_size=C, num_left_chunks=LC)`` loads as it is. sherpa-onnx takes ``C`` and ``LC`` from that
call, never from the model, and its stock ``streaming_server.py`` passes neither (defaults 16
and 4): so the default export is ``C = 16``, ``LC = 4`` (:data:`SHERPA_CHUNK_SIZE`,
:data:`SHERPA_LEFT_CHUNKS`), which the stock tools serve as they are, and any other chunk comes
with a warning of what to pass (:func:`serve_note`). What sherpa-onnx does with it (read from
``sherpa-onnx/csrc/online-wenet-ctc-model.cc`` and ``online-recognizer-ctc-impl.h``), and what
the graph does about each point:

- **Features.** sherpa-onnx computes 80-dim Kaldi fbank itself with our options (25/10 ms,
  povey window, dither 0, no snip edges, 20 Hz .. Nyquist - 400 Hz, log floor FLT_EPSILON: the
  same as lhotse's ``Fbank``), except that for WeNet models it scales the [-1, 1] samples by
  32768 first: its log-mel energies are ours + ``2 ln 32768`` above the floor. The graph undoes
  that exactly, ``ours = max(x - 2 ln 32768, ln FLT_EPSILON)`` (the ``max`` with the offset
  folded into the CMVN mean is one node), then applies our CMVN (none happens in sherpa-onnx).
- **Input frames.** Each step gets ``x (1, C * factor + right_context + 1 - factor, F)`` frames
  from ``processed`` on and advances ``processed`` by ``C * factor``. Our stream's window of a
  chunk starts ``left_pad`` frames before its hop (the subsampling's left context), so we
  declare ``right_context = factor - 1``: ``x`` is exactly the hop's ``C * factor`` new frames,
  and the graph keeps the last ``left_pad`` normalised frames of each step for the next one (a
  zero-initialised state is the left pad of the first chunk, as in our runner).
- **States.** sherpa-onnx allocates zeros ``att_cache (num_blocks, head, LC * C, 2 *
  output_size / head)`` and ``cnn_cache (num_blocks, 1, output_size, cnn_module_kernel - 1)``
  from the metadata, hands each step's outputs to the next step and never reads them: they are
  opaque. ``att_cache`` holds our rotated keys and values, ``(2 L, Tc, D)`` in memory order
  (layer i's block is ``[K_i; V_i]``); ``cnn_cache`` holds our ``L`` conv caches ``(K - 1, D)``
  and then the ``left_pad`` input frames, for which ``cnn_module_kernel`` is declared
  ``K + extra`` (``extra`` the fewest whole columns that hold them; the rest stays zero).
- **Positions and mask.** ``offset`` starts at ``LC * C`` and grows by C per step; the graph
  takes its rotary rows at ``offset - required_cache_size``, our runner's position. ``att_mask``
  (bool, true = attend) becomes the additive mask of the step graph.

The graph is our step graph (:class:`asr_kd.export.fold.FoldedGraph`) with these adapters around
it; :func:`check_sherpa` runs it the way sherpa-onnx does (the loop above, in Python on ONNX
Runtime) against torch ``forward_chunk``, and ``tests/export/test_sherpa.py`` decodes through
``sherpa_onnx`` itself.

**Offline** (``recognizer=offline``, the default for a full-context model such as the teacher):
``OfflineRecognizer.from_wenet_ctc`` runs ``x (1, T, F)``, ``x_lens (1,)`` ->
``log_probs (1, T', V)``, ``log_probs_lens (1,)`` once per utterance, metadata ``vocab_size`` and
``subsampling_factor`` (``offline-wenet-ctc-model.cc``, ``offline-recognizer-ctc-impl.h``). Its
fbank is the online one (the same options, the same x 32768), so :class:`SherpaOfflineGraph` is
our full-context graph behind the same input adapter. One difference of sherpa-onnx 2.0.1, not
ours: its offline fbank adds random noise of about one int16 step to the samples whatever its
``dither`` says (measured: digital silence gives different features on every call, ~ln 150 in
place of the log floor), so audio with exact zeros in it (our synthetic corpus) decodes a little
differently from ours, and now and then from call to call; recorded audio, whose noise floor is
far above one int16 step, does not (demo test set, 143 utterances: transcripts equal to our ORT
runner's, student 136, teacher 127; with a noise floor of 100 int16 steps added to the audio,
student 143, teacher 140; the teacher's changed between three calls on 1).

Usage:
    asr-kd-export format=sherpa-onnx ckpt=exp/student_kd/checkpoints/last.ckpt \\
        out_dir=exp/sherpa/student_kd      # 16 frames, 4 left chunks: streaming_server.py serves it
    asr-kd-export format=sherpa-onnx ckpt=exp/student_kd/checkpoints/last.ckpt \\
        out_dir=exp/sherpa/student_kd_320ms chunk_sizes_ms=[320]    # pass chunk_size=8 (warned)

    asr-kd-export format=sherpa-onnx ckpt=exp/teacher/checkpoints/last.ckpt \\
        out_dir=exp/sherpa/teacher                        # offline: sherpa_onnx.OfflineRecognizer

    paths = export_sherpa(load_model(ckpt), "exp/sherpa/student_kd", chunk_size=8, left_chunks=4)
    recognizer = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(paths["tokens"]), model=str(paths["model"]), chunk_size=8, num_left_chunks=4,
        num_threads=1)

    paths = export_sherpa_offline(load_model(ckpt), "exp/sherpa/teacher")
    recognizer = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(
        model=str(paths["model"]), tokens=str(paths["tokens"]), num_threads=1)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from asr_kd.errors import ConfigError
from asr_kd.export.fold import FoldedGraph
from asr_kd.export.graph import METADATA_KEY, _metadata, _save
from asr_kd.export.limits import check_left_chunks
from asr_kd.inference.sherpa import (
    OFFLINE_KIND,
    ONLINE_KIND,
    read_layout,
    sherpa_kind,
    sherpa_metadata,
)
from asr_kd.models.loading import LoadedModel
from asr_kd.models.streaming import StepSpec

log = logging.getLogger(__name__)
__all__ = [
    "LOG_FLOOR",
    "LOG_SCALE",
    "MODEL_FILE",
    "RECOGNIZERS",
    "SHERPA_CHUNK_SIZE",
    "SHERPA_LEFT_CHUNKS",
    "TOKENS_FILE",
    "SherpaOfflineGraph",
    "SherpaStepGraph",
    "check_sherpa",
    "export_sherpa",
    "export_sherpa_dir",
    "export_sherpa_model",
    "export_sherpa_offline",
    "serve_note",
    "sherpa_layout",
    "write_tokens",
]

MODEL_FILE = "model.onnx"
TOKENS_FILE = "tokens.txt"
LOG_SCALE = 2 * math.log(32768.0)  # WeNet models get samples * 32768: power spectra * 2**30
LOG_FLOOR = math.log(float(np.finfo(np.float32).eps))  # lhotse's and kaldi-native-fbank's floor
# sherpa-onnx's OnlineWenetCtcModelConfig defaults (encoder frames): what
# ``OnlineRecognizer.from_wenet_ctc`` and so its stock ``streaming_server.py`` use when the caller
# passes no chunk size. The online graph has a fixed chunk, so we export these unless asked.
SHERPA_CHUNK_SIZE = 16
SHERPA_LEFT_CHUNKS = 4
INPUTS = ("x", "offset", "required_cache_size", "att_cache", "cnn_cache", "att_mask")
OUTPUTS = ("log_probs", "r_att_cache", "r_cnn_cache")
OFFLINE_INPUTS = ("x", "x_lens")
OFFLINE_OUTPUTS = ("log_probs", "log_probs_lens")
# recognizer=: auto = online for a streaming model, offline for a full-context one.
RECOGNIZERS = ("auto", "online", "offline")


def sherpa_layout(spec: StepSpec, left_pad: int) -> dict[str, int]:
    """The integer metadata sherpa-onnx's WeNet CTC loader reads (and, for readers, our
    ``chunk_size`` / ``num_left_chunks``, which its config must repeat).

    >>> from asr_kd.models import ConformerCTC
    >>> model = ConformerCTC(d_model=64, num_layers=3, num_heads=2, streaming=True)
    >>> layout = sherpa_layout(model.step_spec(8, 4), model.subsampling.left_pad)
    >>> layout["right_context"], layout["cnn_module_kernel"], layout["num_blocks"]
    (3, 17, 3)
    """
    stash = left_pad * spec.input_dim  # floats of the carried input frames
    extra = -(-stash // (spec.num_layers * spec.d_model))  # whole conv-cache columns
    return {
        "head": spec.num_heads,
        "num_blocks": spec.num_layers,
        "output_size": spec.d_model,
        "cnn_module_kernel": spec.conv_context + 1 + extra,
        "right_context": spec.subsampling_factor - 1,
        "subsampling_factor": spec.subsampling_factor,
        "vocab_size": spec.vocab_size,
        "chunk_size": spec.chunk_size,
        "num_left_chunks": spec.left_chunks,
    }


class _SherpaInput(nn.Module):
    """sherpa-onnx's fbank of a WeNet model (ours + ``LOG_SCALE`` above the log floor) -> our
    normalised input: ``ours = max(x - LOG_SCALE, LOG_FLOOR)``, the shift folded into the CMVN
    mean, the ``max`` one node."""

    def __init__(self, folded: FoldedGraph) -> None:
        super().__init__()
        self.folded = folded
        with torch.no_grad():
            self.register_buffer("floor", torch.tensor(LOG_FLOOR + LOG_SCALE))
            self.register_buffer("mean", folded.cmvn_mean + LOG_SCALE)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.maximum(x, self.floor) - self.mean) * self.folded.cmvn_inv_std


class SherpaOfflineGraph(_SherpaInput):
    """The full-context graph behind sherpa-onnx's offline WeNet CTC interface: ``x (1, T, F)``
    sherpa fbank, ``x_lens (1,)`` int64 -> ``log_probs (1, T // factor, V)``, ``log_probs_lens
    (1,)``. Batch 1, as sherpa-onnx runs a WeNet model (one stream at a time)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(FoldedGraph(model))
        self.factor = model.subsampling_factor
        self.layout = {"vocab_size": model.vocab_size, "subsampling_factor": self.factor}

    def forward(self, x, x_lens):
        (log_probs,) = self.folded.encode(self.normalise(x[0]))
        return log_probs[None], x_lens // self.factor

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        frames = 8 * self.factor + 3
        return torch.randn(1, frames, self.folded.cmvn_mean.numel()), torch.tensor([frames])


class SherpaStepGraph(_SherpaInput):
    """The step graph of ``model.step_spec(chunk_size, left_chunks)`` behind sherpa-onnx's WeNet
    CTC interface (see the module docstring for each adapter).

    Inputs: ``x (1, C*factor, F)`` sherpa fbank, ``offset (1,)`` and ``required_cache_size (1,)``
    int64, ``att_cache (L, H, Tc, 2*Dh)``, ``cnn_cache (L, 1, D, K-1+extra)``, ``att_mask (1, 1,
    Tc + C)`` bool. Outputs: ``log_probs (1, C, V)`` and the two caches for the next step.
    """

    def __init__(self, model: nn.Module, chunk_size: int, left_chunks: int) -> None:
        spec = model.step_spec(chunk_size, left_chunks)
        super().__init__(FoldedGraph(model, spec))
        self.spec = spec
        self.left_pad = model.subsampling.left_pad
        self.layout = sherpa_layout(spec, self.left_pad)
        if not 0 <= self.left_pad <= spec.hop or spec.window != spec.hop + self.left_pad:
            raise ValueError(f"{spec}: a window is not the hop plus {self.left_pad} carried frames")
        self.caches = spec.caches
        self.att = [c for c in spec.caches if c.kind in ("k", "v")]  # k_0, v_0, k_1, ...
        self.conv = [c for c in spec.caches if c.kind == "conv"]
        self.conv_floats = sum(c.rows * c.width for c in self.conv)
        self.stash_floats = self.left_pad * spec.input_dim
        with torch.no_grad():
            self.register_buffer(
                "inv_freq", torch.tensor(spec.inv_freq).repeat(spec.rotary_repeats)
            )
            self.register_buffer(
                "positions", torch.arange(chunk_size, dtype=torch.float32)[:, None]
            )
        spare = self._cnn_floats() - self.conv_floats - self.stash_floats
        self.register_buffer("spare", torch.zeros(spare))

    def _cnn_floats(self) -> int:
        lay = self.layout
        return lay["num_blocks"] * lay["output_size"] * (lay["cnn_module_kernel"] - 1)

    def forward(self, x, offset, required_cache_size, att_cache, cnn_cache, att_mask):
        spec, d = self.spec, self.spec.d_model
        xn = self.normalise(x)  # (1, hop, F)
        conv_flat, stash, _ = cnn_cache.reshape(-1).split(
            [self.conv_floats, self.stash_floats, self.spare.numel()]
        )
        window = torch.cat((stash.reshape(1, self.left_pad, -1), xn), 1).reshape(
            spec.input_shapes["feats"]
        )
        pos = (offset - required_cache_size).to(torch.float32) + self.positions  # (C, 1)
        angles = pos * self.inv_freq
        mask = torch.where(att_mask.reshape(1, -1), 0.0, float("-inf"))
        given = self._blocks(att_cache.reshape(-1, d), self.att)
        given.update(self._blocks(conv_flat.reshape(-1, d), self.conv))
        log_probs, sources = self.folded.encode_layers(
            window, angles.cos(), angles.sin(), mask, given
        )
        r_att = torch.cat(self._next(self.att, given, sources)).reshape(att_cache.shape)
        conv_rows = torch.cat(self._next(self.conv, given, sources)).reshape(-1)
        carried = xn[0, spec.hop - self.left_pad :].reshape(-1)
        r_cnn = torch.cat((conv_rows, carried, self.spare)).reshape(cnn_cache.shape)
        return log_probs[None], r_att, r_cnn

    def _blocks(self, flat, caches) -> dict:
        """``flat`` (the caches' rows one after another, D) -> per cache name, its rows as the
        block the chunk pushes out and the block it keeps (one block when it keeps none): the
        layers concatenate blocks, and the next cache is the kept block and the chunk's rows,
        so the graph slices nothing (each slice is an ONNX node, ~1 us)."""
        c = self.spec.chunk_size
        sizes = [(c, r.rows - c) if r.rows > c else (r.rows,) for r in caches]
        blocks = iter(flat.split([n for pair in sizes for n in pair]))
        return {
            r.name: tuple(next(blocks) for _ in pair) for r, pair in zip(caches, sizes, strict=True)
        }

    def _next(self, caches, given: dict, sources: dict) -> list:
        """Per cache, rows ``[C : C + rows]`` of its source ``[cache; chunk rows]`` as blocks."""
        c, out = self.spec.chunk_size, []
        for r in caches:
            new = sources[r.layer, f"{r.kind}_new"]  # (C, D)
            out += [given[r.name][1], new] if r.rows > c else [new[c - r.rows :]]
        return out

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the graph's shapes (sherpa-onnx's first step, up to ``x``)."""
        spec, lay = self.spec, self.layout
        tc = spec.cached_frames
        head_width = 2 * spec.d_model // spec.num_heads
        return (
            torch.zeros(1, spec.hop, spec.input_dim),
            torch.tensor([tc]),
            torch.tensor([tc]),
            torch.zeros(spec.num_layers, spec.num_heads, tc, head_width),
            torch.zeros(spec.num_layers, 1, spec.d_model, lay["cnn_module_kernel"] - 1),
            torch.zeros(1, 1, tc + spec.chunk_size, dtype=torch.bool),
        )


def write_tokens(tokenizer, path: str | Path) -> Path:
    """``tokens.txt``: ``symbol id`` per line, sherpa-onnx's symbol table. Our blank ``<blk>`` is
    the one it looks for; ``▁`` is the word boundary it turns into a space."""
    symbols = tokenizer.to_dict()["symbols"]
    bad = [s for s in symbols if not s or any(ch.isspace() for ch in s)]
    if bad:
        raise ConfigError(f"tokens {bad} hold white space: sherpa-onnx's tokens.txt cannot")
    path = Path(path)
    path.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return path


def _write_sherpa(
    loaded: LoadedModel, graph: nn.Module, out_dir: Path, names: dict, meta: dict, what: str
) -> dict[str, Path]:
    """``out_dir/model.onnx`` with our metadata, sherpa-onnx's (``graph.layout``, ``model_type``)
    and ``out_dir/tokens.txt``; returns ``{"model": ..., "tokens": ...}``."""
    path = _save(graph, graph.example_inputs(), out_dir / MODEL_FILE, names, meta)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k: str(v) for k, v in graph.layout.items()})
    props.update(model_type="wenet_ctc", comment=f"asr_kd {what} ConformerCTC (asr-kd-export)")
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    return {"model": path, "tokens": write_tokens(loaded.tokenizer, out_dir / TOKENS_FILE)}


def export_sherpa(
    loaded: LoadedModel, out_dir: str | Path, chunk_size: int, left_chunks: int
) -> dict[str, Path]:
    """``out_dir/model.onnx`` (the WeNet CTC step graph, metadata included) and
    ``out_dir/tokens.txt`` for ``OnlineRecognizer``; returns ``{"model": ..., "tokens": ...}``."""
    model = loaded.model.eval()
    if not getattr(model, "streaming", False):
        raise ConfigError(f"{loaded.path}: a full-context model has no streaming step for sherpa")
    check_left_chunks(loaded, left_chunks, "sherpa-onnx")
    graph = SherpaStepGraph(model, chunk_size, left_chunks).eval()
    meta = _metadata(loaded, kind=ONLINE_KIND, **graph.spec.to_metadata())
    names = {"input_names": list(INPUTS), "output_names": list(OUTPUTS)}
    note = serve_note(chunk_size, left_chunks)
    paths = _write_sherpa(loaded, graph, Path(out_dir), names, meta, f"streaming; {note}")
    if (chunk_size, left_chunks) != (SHERPA_CHUNK_SIZE, SHERPA_LEFT_CHUNKS):
        log.warning("%s: %s", paths["model"], note)
    return paths


def serve_note(chunk_size: int, left_chunks: int) -> str:
    """What a caller of ``from_wenet_ctc`` must pass to serve an online graph of ``chunk_size``
    frames and ``left_chunks`` cached chunks (sherpa-onnx reads neither from the model).

    >>> serve_note(16, 4)[:42]
    "sherpa-onnx's defaults (chunk_size=16, num"
    >>> serve_note(8, 4)[:60]
    'pass chunk_size=8, num_left_chunks=4 to OnlineRecognizer.fro'
    """
    if (chunk_size, left_chunks) == (SHERPA_CHUNK_SIZE, SHERPA_LEFT_CHUNKS):
        return (
            f"sherpa-onnx's defaults (chunk_size={chunk_size}, num_left_chunks={left_chunks}): "
            "its streaming_server.py serves it as it is"
        )
    return (
        f"pass chunk_size={chunk_size}, num_left_chunks={left_chunks} to "
        "OnlineRecognizer.from_wenet_ctc: sherpa-onnx's streaming_server.py passes none "
        f"(defaults {SHERPA_CHUNK_SIZE}, {SHERPA_LEFT_CHUNKS}) and cannot run this graph"
    )


def export_sherpa_offline(loaded: LoadedModel, out_dir: str | Path) -> dict[str, Path]:
    """``out_dir/model.onnx`` (the full-context graph in the offline WeNet CTC format) and
    ``out_dir/tokens.txt`` for ``OfflineRecognizer``; any of our models (a streaming student
    runs with full context there)."""
    graph = SherpaOfflineGraph(loaded.model.eval()).eval()
    meta = _metadata(loaded, kind=OFFLINE_KIND)
    names = {
        "input_names": list(OFFLINE_INPUTS),
        "output_names": list(OFFLINE_OUTPUTS),
        "dynamic_axes": {"x": {1: "frames"}, "log_probs": {1: "out_frames"}},
    }
    return _write_sherpa(loaded, graph, Path(out_dir), names, meta, "full-context")


# ---------------------------------------------------------------------------- check
def sherpa_steps(session, feats: np.ndarray, layout: dict) -> np.ndarray:
    """Run ``model.onnx`` the way sherpa-onnx's WeNet CTC model does, on ``feats (T, F)`` in
    sherpa units (our fbank + ``LOG_SCALE``): one step per whole hop of ``C * factor`` frames,
    zero states, ``offset`` from ``LC * C``, its ``att_mask``. Returns (steps * C, V)."""
    c, lc = layout["chunk_size"], layout["num_left_chunks"]
    hop, tc = c * layout["subsampling_factor"], c * lc
    inputs = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()[3:5]}
    offset, required = np.array([tc], np.int64), np.array([tc], np.int64)
    out = []
    for start in range(0, feats.shape[0] - hop + 1, hop):
        chunk_idx = int(offset[0]) // c - lc
        mask = np.ones((1, 1, tc + c), bool)
        if chunk_idx < lc:
            mask[..., : tc - chunk_idx * c] = False
        feed = {"x": feats[None, start : start + hop], "offset": offset}
        feed.update(required_cache_size=required, att_mask=mask, **inputs)
        log_probs, att, cnn = session.run(None, feed)
        inputs = {"att_cache": att, "cnn_cache": cnn}
        offset = offset + log_probs.shape[1]
        out.append(log_probs[0])
    return np.concatenate(out)


def export_sherpa_model(
    loaded: LoadedModel, out_dir: str | Path, chunk_size: int | None, left_chunks: int | None
) -> Path:
    """``out_dir/model.onnx`` (+ ``tokens.txt``): the streaming step of ``chunk_size`` encoder
    frames and ``left_chunks`` cached chunks (OnlineRecognizer), or with ``chunk_size=None`` the
    full-context graph (OfflineRecognizer)."""
    if chunk_size is None:
        return export_sherpa_offline(loaded, out_dir)["model"]
    return export_sherpa(loaded, out_dir, chunk_size, left_chunks)["model"]


def _random_fbank(model: nn.Module, frames: int, seed: int) -> torch.Tensor:
    """(frames, F) random raw fbank around the model's CMVN, never below the log floor (which
    the sherpa graphs clamp to, as no fbank is below it)."""
    gen = torch.Generator().manual_seed(seed)
    feats = model.cmvn_mean + model.cmvn_std * torch.randn(frames, model.input_dim, generator=gen)
    return feats.clamp(min=LOG_FLOOR)


def _ort_session(model_path: str | Path):
    import onnxruntime as ort

    from asr_kd.inference.onnx import session_options

    return ort.InferenceSession(str(model_path), session_options(1), ["CPUExecutionProvider"])


@torch.inference_mode()
def check_sherpa(loaded: LoadedModel, model_path: str | Path, seed: int = 0) -> float:
    """Max |log-prob| difference between ``model.onnx`` run as sherpa-onnx runs it and torch
    (NaN if either is NaN): online, :func:`sherpa_steps` against ``forward_chunk`` on one random
    utterance long enough for the attention cache to fill and slide; offline, one call against
    the full-context ``forward`` (and ``log_probs_lens`` must be its length)."""
    meta = sherpa_metadata(model_path)
    if sherpa_kind(model_path, meta) == OFFLINE_KIND:
        return _check_offline(loaded, model_path, seed)
    layout = read_layout(model_path, meta)
    spec = StepSpec.from_metadata(json.loads(meta[METADATA_KEY]), str(model_path))
    model = loaded.model.eval()
    steps = spec.left_chunks + 3
    feats = _random_fbank(model, steps * spec.hop + 5, seed)  # + a partial hop: sherpa leaves it
    state = model.init_state(1, spec.chunk_size, spec.left_chunks)
    ref, _ = model.forward_chunk(feats[None], state)
    got = sherpa_steps(_ort_session(model_path), feats.numpy() + np.float32(LOG_SCALE), layout)
    if got.shape != tuple(ref.shape[1:]):
        raise AssertionError(f"{model_path}: {got.shape} log-probs != torch {tuple(ref.shape[1:])}")
    return float(np.abs(got - ref[0].numpy()).max())


def _check_offline(loaded: LoadedModel, model_path: str | Path, seed: int, frames: int = 403):
    model = loaded.model.eval()
    feats = _random_fbank(model, frames, seed)
    ref, ref_lens = model(feats[None], torch.tensor([frames]))
    x = feats[None].numpy() + np.float32(LOG_SCALE)
    got, got_lens = _ort_session(model_path).run(None, {"x": x, "x_lens": np.array([frames])})
    if got.shape != tuple(ref.shape) or got_lens.tolist() != ref_lens.tolist():
        raise AssertionError(
            f"{model_path}: log_probs {got.shape}, lens {got_lens.tolist()} != torch "
            f"{tuple(ref.shape)}, {ref_lens.tolist()}"
        )
    return float(np.abs(got - ref.numpy()).max())


def export_sherpa_dir(
    loaded: LoadedModel,
    out_dir: str | Path,
    chunk_sizes,
    left_chunks: int | None,
    recognizer: str = "auto",
) -> dict[str, Path]:
    """``format=sherpa-onnx`` of :func:`asr_kd.export.onnx.export_and_check`: one directory
    (``model.onnx``, ``tokens.txt``) for ``recognizer`` (``online``: the one chunk size's step;
    ``offline``: the full-context graph; ``auto``: online for a streaming model, offline
    otherwise), as ``{kind: model.onnx}``, kind ``sherpa-onnx`` or ``sherpa-onnx-offline``.
    ``chunk_sizes=None``: sherpa-onnx's default chunk (:data:`SHERPA_CHUNK_SIZE`) and, unless
    ``left_chunks`` is given, its default left context (:data:`SHERPA_LEFT_CHUNKS`)."""
    streaming = bool(getattr(loaded.model, "streaming", False))
    if recognizer not in RECOGNIZERS:
        raise ConfigError(f"recognizer must be one of {RECOGNIZERS}, got {recognizer!r}")
    if recognizer == "offline" or (recognizer == "auto" and not streaming):
        chunk_size = lc = None
    elif not streaming:
        raise ConfigError(
            f"{loaded.path} holds a full-context model: it has no streaming step for "
            "sherpa_onnx.OnlineRecognizer; use recognizer=offline (OfflineRecognizer)"
        )
    elif chunk_sizes is None:  # the chunk sherpa-onnx's tools run when given none
        chunk_size = SHERPA_CHUNK_SIZE
        lc = SHERPA_LEFT_CHUNKS if left_chunks is None else int(left_chunks)
    elif len(chunk_sizes) != 1:
        raise ConfigError(
            f"format=sherpa-onnx writes one model.onnx per directory: give one chunk size "
            f"(chunk_sizes_ms=[320]), got {len(chunk_sizes)}; run once per chunk size"
        )
    else:
        chunk_size, lc = chunk_sizes[0], loaded.model.resolve_left_chunks(left_chunks)
    kind = OFFLINE_KIND if chunk_size is None else ONLINE_KIND
    return {kind: export_sherpa_model(loaded, out_dir, chunk_size, lc)}
