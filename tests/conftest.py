import os

# W&B never reaches a server from the tests; a test that wants an offline run sets WANDB_MODE itself.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

# Tests run small tensors; one thread avoids OpenMP stalls when other processes share the 2 cores.
torch.set_num_threads(1)
