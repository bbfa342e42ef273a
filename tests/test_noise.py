"""Counter-based per-sample noise: Philox4x32-10 against its published answers, the normals' exactness, and
the guarantees the samplers rely on (batch, split and resume independence; a cost that does not grow with B)."""

import math
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ncsn_pl.core.samplers import AnnealedLangevin, seeded_sample
from ncsn_pl.core.seeding import PerSampleNoise, _box_muller, _log_exact, philox4x32, sample_seeds

SIGMAS = torch.tensor([1.0, 0.5, 0.25])


def words(*values):
    return [torch.tensor([v]) for v in values]


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123's known-answer vectors (kat_vectors, philox4x32 10 rounds)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)  # fmt: skip
def test_philox_matches_the_published_answers(counter, key, expected):
    out = philox4x32(words(*counter), words(*key))
    assert [int(w) for w in out] == list(expected)


def test_exact_log_and_box_muller_agree_with_the_library_functions():
    v = torch.logspace(-12, 12, 1001, dtype=torch.float64)
    torch.testing.assert_close(_log_exact(v), v.log(), rtol=0, atol=1e-14)
    a, b = torch.randint(0, 2**32, (2, 5000), generator=torch.Generator().manual_seed(0))
    radius = torch.sqrt(-2 * torch.log((a.double() + 0.5) / 2**32))
    angle = 2 * math.pi * b.double() / 2**32
    z0, z1 = _box_muller(a, b)
    torch.testing.assert_close(z0, radius * angle.cos(), rtol=0, atol=1e-11)
    torch.testing.assert_close(z1, radius * angle.sin(), rtol=0, atol=1e-11)


def test_draws_are_standard_normal_and_uniform():
    noise = PerSampleNoise(list(range(50)))
    z = noise.randn((50, 4001), dtype=torch.float64)  # a row length that is not a multiple of 4
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01 and abs((z**4).mean() - 3) < 0.05
    assert (z[:, :2000] - z[:, 2000:4000]).abs().min() > 0  # no repeated blocks
    u = noise.rand((50, 1000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    assert not torch.equal(noise.randn((50, 8)), noise.randn((50, 8)))  # each draw is a new counter


def test_a_row_depends_only_on_its_seed_and_the_draws_so_far():
    seeds = sample_seeds(3, range(6))
    whole = PerSampleNoise(seeds)
    first, second = whole.randn((6, 2, 5)), whole.randn((6, 2, 5))
    # the same seeds reversed, and one seed alone: the same rows bit for bit
    flipped = PerSampleNoise(seeds[::-1])
    assert torch.equal(flipped.randn((6, 2, 5)).flip(0), first)
    alone = PerSampleNoise(seeds[4:5])
    alone.randn((1, 2, 5))
    assert torch.equal(alone.randn((1, 2, 5))[0], second[4])
    with pytest.raises(ValueError, match=r"seeds in \[0, 2\^64\)"):
        PerSampleNoise([-1])


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_a_draw_costs_the_same_number_of_tensor_operations_at_any_batch_size():
    counts = []
    for batch in (1, 7, 300):
        noise = PerSampleNoise(list(range(batch)))
        with CountOps() as mode:
            noise.randn_like(torch.zeros(batch, 1, 8, 8))
        counts.append(mode.ops)
    assert counts[0] == counts[1] == counts[2] > 0


def test_seeded_samples_are_the_same_for_one_or_two_processes_and_after_a_resume():
    def score(x, levels):
        return 0.5 - x

    sampler = AnnealedLangevin(n_steps_each=4, step_lr=0.01)
    seeds = sample_seeds(9, range(8))
    one = seeded_sample(sampler, score, SIGMAS, (3, 2), seeds)
    # two ranks: k = 0, 2, 4, 6 and k = 1, 3, 5, 7
    rank0 = seeded_sample(sampler, score, SIGMAS, (3, 2), seeds[0::2])
    rank1 = seeded_sample(sampler, score, SIGMAS, (3, 2), seeds[1::2])
    assert torch.equal(one[0::2], rank0) and torch.equal(one[1::2], rank1)
    # a resumed run redraws the missing samples 5..7 from their seeds alone
    resumed = seeded_sample(sampler, score, SIGMAS, (3, 2), seeds[5:])
    assert torch.equal(one[5:], resumed)


def test_a_diverging_score_warns_once_with_the_level_where_the_samples_strayed():
    sigmas = torch.tensor([1.0, 0.5, 0.25, 0.1])

    def diverges_from_level_2(x, levels):
        return torch.where(levels.view(-1, 1) >= 2, 4000 * torch.ones_like(x), 0.5 - x)

    sampler = AnnealedLangevin(n_steps_each=2, step_lr=0.002)
    with pytest.warns(RuntimeWarning, match=r"far outside the data's range \[0, 1\].* first strayed at level 2 "
                                            r"\(sigma=0\.25\).* train longer .*smaller step") as caught:  # fmt: skip
        seeded_sample(sampler, diverges_from_level_2, sigmas, (3,), [1, 2, 3])
    assert len([w for w in caught if "far outside" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound score: no warning
        seeded_sample(sampler, lambda x, levels: 0.5 - x, sigmas, (3,), [1, 2, 3])
