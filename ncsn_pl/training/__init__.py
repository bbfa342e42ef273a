"""The Lightning glue: the LightningModule and the callbacks that decide when and where to sample, score and
checkpoint (how is the core's and the metrics' job)."""

from ncsn_pl.runs.logger import RunLogger
from ncsn_pl.training.checkpoint import ResumableCheckpoint
from ncsn_pl.training.ema import EMAWithWarmup
from ncsn_pl.training.module import ScoreModel
from ncsn_pl.training.sample_grid import SampleGrid
from ncsn_pl.training.sample_quality import SampleQualityMonitor
from ncsn_pl.training.toy_quality import ToySampleQuality

__all__ = [
    "EMAWithWarmup", "ResumableCheckpoint", "RunLogger", "SampleGrid", "SampleQualityMonitor", "ScoreModel",
    "ToySampleQuality",
]
