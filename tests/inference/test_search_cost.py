"""The per-chunk cost measurement (asr_kd.inference.search_cost) behind
``python -m asr_kd.cli.search_benchmark``."""

from __future__ import annotations

import pytest

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.inference.search import BeamSettings, GreedySearch, make_search
from asr_kd.inference.search_cost import chunk_cost_ms, spelled_log_probs


def test_a_chunk_is_timed_after_the_audio_before_it_with_or_without_partials(tmp_path):
    tok = Tokenizer.char()
    log_probs = spelled_log_probs(tok, "THE CAT SAT ON THE MAT " * 4, frames_per_token=3)
    assert GreedySearch(tok).offline(spelled_log_probs(tok, "THE CAT", 3, 0.0)) == "THE CAT"
    search = make_search("beam", tok, BeamSettings(size=8, cache_dir=str(tmp_path)))
    fed = []
    stream = search.stream

    def recording_stream():
        s = stream()
        fed.append(s)
        return s

    search.stream = recording_stream
    for partials in (False, True):
        assert chunk_cost_ms(search, log_probs, 120, 8, partials, chunks=5) > 0.0
    quiet, shown = fed
    assert quiet.reads == 0 and shown.reads == 15 + 5  # a partial after every chunk
    with pytest.raises(ValueError, match="frames of log-probs, 1040 needed"):
        chunk_cost_ms(search, log_probs, 1000, 8, False, chunks=5)
