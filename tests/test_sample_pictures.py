"""Pictures people can look at: small images enlarged by an integer factor (nearest neighbour), 2-D samples drawn
over the contours of the true density, and the pictures logged to TensorBoard as well as to W&B."""

from unittest import mock

import numpy as np
import pytest
import torch
from lightning.fabric.loggers import tensorboard as fabric_tensorboard
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from ncsn_pl.data import ToyDataModule
from ncsn_pl.data.image_files import save_grid, upscale_factor, upscale_nearest
from ncsn_pl.networks import ToyScoreMLP
from ncsn_pl.training import SampleGrid, ScoreModel
from ncsn_pl.training.image_logging import log_image


@pytest.mark.parametrize(("size", "factor"), [(8, 8), (14, 5), (28, 3), (32, 2), (64, 1), (128, 1)])
def test_small_images_are_enlarged_by_an_integer_factor_to_a_viewable_size(tmp_path, size, factor):
    assert upscale_factor(size, 64) == factor
    images = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0))
    grid = save_grid(images, tmp_path / "grid.png")
    side = size * factor
    assert grid.shape == (3, 2 + 2 * (side + 2), 2 + 2 * (side + 2))
    # nearest neighbour: every pixel is repeated factor x factor times, no value is made up
    first = grid[0, 2 : 2 + side, 2 : 2 + side]
    assert torch.equal(first, upscale_nearest(images[0, 0], factor))
    assert Image.open(tmp_path / "grid.png").size == (grid.shape[2], grid.shape[1])
    assert save_grid(images, tmp_path / "raw.png", display_size=0).shape[-1] == 2 + 2 * (size + 2)


class RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter (the tensorboard package is optional)."""

    def __init__(self) -> None:
        self.images = []

    def add_image(self, tag, image, global_step=None, dataformats="CHW") -> None:
        self.images.append((tag, image, global_step, dataformats))

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeTensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger writing to a :class:`RecordingWriter` (no tensorboard package needed)."""

    def __init__(self, root) -> None:
        with mock.patch.object(fabric_tensorboard, "_TENSORBOARDX_AVAILABLE", True):  # the package check only
            super().__init__(str(root))
        self.writer = RecordingWriter()

    @property
    def experiment(self) -> RecordingWriter:
        return self.writer

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass


class FakeWandb:
    def __init__(self) -> None:
        self.images = []

    def log_image(self, key, images, caption=None, step=None) -> None:
        self.images.append((key, images, caption, step))


def test_pictures_go_to_tensorboard_and_to_loggers_with_log_image(tmp_path):
    tensorboard, wandb_like = FakeTensorBoard(tmp_path), FakeWandb()
    picture = torch.rand(3, 10, 12)
    assert log_image([tensorboard, wandb_like, object()], "samples", picture, "final", 7) == 2
    ((tag, image, step, layout),) = tensorboard.writer.images
    assert (tag, step, layout) == ("samples", 7, "CHW") and image is picture
    assert wandb_like.images == [("samples", [picture], ["final"], 7)]


def test_a_toy_run_draws_its_samples_over_the_true_density(tmp_path):
    torch.manual_seed(0)
    data = ToyDataModule(num_train=64, num_val=16, batch_size=32)
    model = ScoreModel(ToyScoreMLP(dim=2, hidden=16, num_scales=4), sigma_max=10.0, sigma_min=1.0, num_scales=4,
                       n_steps_each=2, step_lr=0.1, init_range=(-8.0, 8.0), data_shape=(2,))  # fmt: skip
    grid = SampleGrid(num_samples=200, on_train_end=True, progress_bar=False)
    tensorboard = FakeTensorBoard(tmp_path / "tb")
    trainer = Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, callbacks=[grid], logger=tensorboard,
                      default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    assert grid.last_path is not None and grid.last_path.name == "final.png"
    picture = np.asarray(Image.open(grid.last_path).convert("RGB"))
    assert picture.shape[0] > 200 and picture.shape[1] > 200  # a plot, not a 2-pixel "grid"
    r, g, b = (picture[..., i].astype(int) for i in range(3))
    orange = (r - b > 60) & (r > g) & (g > b)
    grey = (np.abs(picture[..., 0].astype(int) - picture[..., 2]) < 8) & (picture[..., 0] < 200)
    assert orange.sum() > 100 and grey.sum() > 100  # the samples and the contour lines (and axes) are drawn
    ((tag, logged, step, _),) = tensorboard.writer.images
    assert tag == "samples" and logged.shape == (3, *picture.shape[:2]) and step == 1
