"""Engine tests run on the CPU in fp32 with tiny models and one thread (the machine is shared)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
