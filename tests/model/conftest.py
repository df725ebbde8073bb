"""Model tests run on the CPU with tiny configurations (except the parameter-count tests) and few threads,
so the folder stays fast on a shared 2-core machine."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
