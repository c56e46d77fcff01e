import pytest
import torch

from asr_kd.models import ConformerCTC


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run many small ops: on a shared 2-core machine, one thread avoids the
    spin-wait of oversubscribed intra-op threads (measured 10x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny():
    """Factory of tiny eval-mode models (V=11, D=32, 2 layers, K=5), seeded, with random CMVN."""

    def make(streaming: bool = True, **overrides) -> ConformerCTC:
        torch.manual_seed(0)
        args = dict(
            vocab_size=11,
            d_model=32,
            num_layers=2,
            num_heads=2,
            ff_dim=64,
            conv_kernel_size=5,
            subsampling_channels=8,
            dropout=0.0,
            streaming=streaming,
        )
        if streaming:
            args["train_chunk_sizes"] = [2, 4, None]
        model = ConformerCTC(**{**args, **overrides}).eval()
        model.set_cmvn(torch.randn(80) * 0.1, torch.rand(80) + 0.5)
        return model

    return make
