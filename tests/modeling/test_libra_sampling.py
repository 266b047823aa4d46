"""Libra R-CNN's samplers (d2ext.modeling.sampling) on hand-made IoUs and matches."""

import pytest
import torch

from d2ext.modeling.sampling import (
    instance_balanced_pos_sample,
    iou_balanced_neg_sample,
    iou_bin_index,
    libra_subsample_labels,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def scene(*groups):
    """max IoUs from (value, count) pairs, all negative, plus one positive at IoU 1.0 (the GT
    appended as a proposal), which sets the top bin edge as in training."""
    ious = torch.cat([torch.full((n,), v) for v, n in groups] + [torch.ones(1)])
    negative = torch.ones_like(ious, dtype=torch.bool)
    negative[-1] = False
    return ious, negative


def counts(ious, idx, values):
    return [int((ious[idx] == v).sum()) for v in values]


def test_bins_get_exact_quotas():
    # K = 3 bins over [0, 1): [0, 1/3), [1/3, 2/3), [2/3, 1); 30 candidates in each.
    ious, negative = scene((0.1, 30), (0.4, 30), (0.8, 30))
    idx = iou_balanced_neg_sample(ious, negative, 30, generator=gen())
    assert idx.numel() == 30 and negative[idx].all()
    assert counts(ious, idx, (0.1, 0.4, 0.8)) == [10, 10, 10]
    # floor(31 / 3) = 10 per bin, the 31st is topped up from any bin.
    idx = iou_balanced_neg_sample(ious, negative, 31, generator=gen())
    assert sorted(counts(ious, idx, (0.1, 0.4, 0.8))) == [10, 10, 11]


def test_short_bin_gives_all_and_shortfall_is_topped_up():
    # The defaults' situation: negatives only below 0.5, so the third bin is empty and [1/3, 2/3)
    # is short; both shortfalls are topped up from the other negatives.
    ious, negative = scene((0.05, 200), (0.45, 4))
    idx = iou_balanced_neg_sample(ious, negative, 30, generator=gen())
    assert counts(ious, idx, (0.05, 0.45)) == [26, 4]
    # Top-up draws from every remaining IoU-set negative, not only the first bin.
    ious, negative = scene((0.1, 50), (0.45, 5), (0.8, 20))
    seen_extra_in_last_bin = False
    for seed in range(20):
        idx = iou_balanced_neg_sample(ious, negative, 30, generator=gen(seed))
        low, mid, high = counts(ious, idx, (0.1, 0.45, 0.8))
        assert idx.numel() == 30 and mid == 5 and low >= 10 and high >= 10
        seen_extra_in_last_bin |= high > 10
    assert seen_extra_in_last_bin


def test_bin_edges_follow_the_max_iou_of_all_proposals():
    # Without the positive at 1.0 the top edge is 0.45: bins [0, .15), [.15, .3), [.3, .45) and
    # the 0.45 negatives sit on the excluded top edge (top-up only): 3 + 3 from the bins, 3 more
    # from anywhere.
    ious = torch.cat([torch.full((20,), 0.05), torch.full((20,), 0.2), torch.full((20,), 0.45)])
    idx = iou_balanced_neg_sample(ious, torch.ones(60, dtype=torch.bool), 9, generator=gen())
    low, mid, top = counts(ious, idx, (0.05, 0.2, 0.45))
    assert idx.numel() == 9 and low >= 3 and mid >= 3 and top <= 3
    assert iou_bin_index(
        torch.tensor([0.0, 0.149, 0.15, 0.44, 0.45]), torch.tensor(0.45), 3
    ).tolist() == [
        0,
        0,
        1,
        2,
        -1,
    ]


def test_floor_threshold_and_fraction():
    ious, negative = scene((0.0, 40), (0.05, 60), (0.2, 50), (0.45, 50))
    # tau = 0.1, half the quota from the floor set [0, 0.1), the rest in bins over [0.1, 1.0)
    # of width 0.3: 6 each from 0.2 and 0.45, the shortfall 8 from the IoU set.
    idx = iou_balanced_neg_sample(
        ious, negative, 40, floor_thresh=0.1, floor_fraction=0.5, generator=gen()
    )
    assert idx.numel() == 40
    assert int((ious[idx] < 0.1).sum()) == 20
    c02, c045 = counts(ious, idx, (0.2, 0.45))
    assert c02 + c045 == 20 and min(c02, c045) >= 6
    # tau = 0: the floor set is exactly IoU 0; fraction 1 takes everything from it.
    idx = iou_balanced_neg_sample(
        ious, negative, 30, floor_thresh=0.0, floor_fraction=1.0, generator=gen()
    )
    assert (ious[idx] == 0).all() and idx.numel() == 30
    # A floor set too small is topped up from the other negatives.
    idx = iou_balanced_neg_sample(
        ious, negative, 150, floor_thresh=0.0, floor_fraction=1.0, generator=gen()
    )
    assert idx.numel() == 150 and int((ious[idx] == 0).sum()) == 40


def test_default_floor_draws_iou0_negatives_only_to_top_up():
    # METHODS.md Errata 1: mmdet trains with tau = 0 (its sampler rewrites -1 to 0 on the first
    # call). 25 % of the negatives at IoU 0, plenty above 0: the bins (width 1/3 over (0, 1))
    # take floor(400 / 3) = 133 from [0, 1/3) and 133 from [1/3, 2/3) (all at 0.1 and 0.4), the
    # empty top bin's 134 come from the IoU > 0 rest, so no IoU-0 negative is drawn.
    ious, negative = scene((0.0, 500), (0.1, 1000), (0.4, 500))
    for seed in range(3):
        idx = iou_balanced_neg_sample(ious, negative, 400, generator=gen(seed))
        zero, low, mid = counts(ious, idx, (0.0, 0.1, 0.4))
        assert idx.numel() == 400 and zero == 0 and low >= 133 and mid >= 133
        pos, neg = libra_subsample_labels(
            torch.where(negative, 5, 2),
            401,
            0.25,
            5,
            max_ious=ious,
            matched_idxs=torch.zeros_like(ious, dtype=torch.long),
            generator=gen(seed),
        )
        assert neg.numel() == 400 and int((ious[neg] == 0).sum()) == 0
    # The literal -1 (no floor set) bins IoU 0 with 0.1 in [0, 1/3): 133 drawn from those 1500
    # (~44 at IoU 0), and the top-up of 134 from the 1734 left (~456 at IoU 0, ~35): ~80.
    zero = [
        counts(
            ious,
            iou_balanced_neg_sample(ious, negative, 400, floor_thresh=-1.0, generator=gen(s)),
            (0.0,),
        )[0]
        for s in range(5)
    ]
    assert 60 <= sum(zero) / len(zero) <= 100


def test_default_floor_tops_up_with_iou0_negatives():
    # Too few IoU > 0 negatives (10 + 5) for 40: all 15 of them, then 25 of the IoU-0 ones.
    ious, negative = scene((0.0, 100), (0.2, 10), (0.45, 5))
    idx = iou_balanced_neg_sample(ious, negative, 40, generator=gen())
    assert idx.numel() == 40 and counts(ious, idx, (0.0, 0.2, 0.45)) == [25, 10, 5]
    # Enough IoU > 0 negatives for the bins but not for the bins' top-up: 30 wanted, 10 per bin,
    # bins hold 12 / 5 / 0, so 10 + 5 then the IoU > 0 rest (2), then 13 from IoU 0.
    ious, negative = scene((0.0, 100), (0.2, 12), (0.45, 5))
    idx = iou_balanced_neg_sample(ious, negative, 30, generator=gen())
    assert counts(ious, idx, (0.0, 0.2, 0.45)) == [13, 12, 5]


def test_floor_thresh_must_be_nonnegative_or_minus_one():
    ious, negative = scene((0.1, 10))
    with pytest.raises(ValueError, match="floor_thresh"):
        iou_balanced_neg_sample(ious, negative, 5, floor_thresh=-0.5)


def test_one_bin_is_uniform_over_the_iou_set():
    ious, negative = scene((0.05, 900), (0.45, 100))
    low = [
        counts(
            ious,
            iou_balanced_neg_sample(ious, negative, 100, num_bins=1, generator=gen(s)),
            (0.05,),
        )[0]
        for s in range(10)
    ]
    assert 80 <= sum(low) / len(low) <= 100  # uniform: ~90 of 100 from the 90% at 0.05


def test_zero_negatives_and_fewer_candidates_than_requested():
    ious = torch.tensor([0.9, 0.7, 0.2, 0.1])
    none = iou_balanced_neg_sample(ious, torch.zeros(4, dtype=torch.bool), 10)
    assert none.numel() == 0 and none.dtype == torch.long
    few = iou_balanced_neg_sample(ious, torch.tensor([False, False, True, True]), 10)
    assert few.tolist() == [2, 3]
    assert iou_balanced_neg_sample(ious, torch.ones(4, dtype=torch.bool), 0).numel() == 0
    # No GT in the image: every IoU is 0, all bins are empty, the sample is uniform.
    idx = iou_balanced_neg_sample(
        torch.zeros(100), torch.ones(100, dtype=torch.bool), 30, generator=gen()
    )
    assert idx.numel() == 30 and idx.unique().numel() == 30


def test_seeded_generator_reproduces_the_draw():
    ious, negative = scene((0.05, 500), (0.4, 100))
    a = iou_balanced_neg_sample(ious, negative, 60, generator=gen(7))
    b = iou_balanced_neg_sample(ious, negative, 60, generator=gen(7))
    c = iou_balanced_neg_sample(ious, negative, 60, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_instance_balance_across_very_different_gts():
    # GT 0 matches 100 positives, GT 1 three, GT 2 ten; 30 wanted: quota round(30/3) + 1 = 11
    # each, GT 1 and 2 give all they have, GT 0 gets 11 + the shortfall 6.
    matched = torch.cat(
        [torch.zeros(100), torch.ones(3), torch.full((10,), 2), torch.zeros(50)]
    ).long()
    positive = torch.cat([torch.ones(113, dtype=torch.bool), torch.zeros(50, dtype=torch.bool)])
    idx = instance_balanced_pos_sample(matched, positive, 30, generator=gen())
    assert positive[idx].all() and torch.bincount(matched[idx]).tolist() == [17, 3, 10]
    # Quotas over the request are cut back: round(9/2) + 1 = 5 each -> 10 -> 9.
    matched = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    idx = instance_balanced_pos_sample(
        matched, torch.ones(200, dtype=torch.bool), 9, generator=gen()
    )
    assert idx.numel() == 9 and sorted(torch.bincount(matched[idx]).tolist()) == [4, 5]
    # Fewer positives than requested: all of them.
    idx = instance_balanced_pos_sample(matched, torch.arange(200) < 5, 9)
    assert idx.tolist() == [0, 1, 2, 3, 4]


def test_libra_subsample_labels_counts_like_detectron2():
    # 5 classes, background 5, ignore -1: 40 positives over 2 GTs, 300 negatives, 10 ignored.
    labels = torch.cat([torch.full((40,), 2), torch.full((300,), 5), torch.full((10,), -1)])
    matched = torch.cat([torch.zeros(35), torch.ones(5), torch.zeros(310)]).long()
    ious = torch.cat(
        [torch.full((40,), 0.7), torch.rand(300, generator=gen()) * 0.5, torch.zeros(10)]
    )
    pos, neg = libra_subsample_labels(
        labels, 128, 0.25, 5, max_ious=ious, matched_idxs=matched, generator=gen()
    )
    assert pos.numel() == 32 and neg.numel() == 96
    assert (labels[pos] == 2).all() and (labels[neg] == 5).all()
    assert torch.bincount(matched[pos]).tolist() == [27, 5]
    # Switched off: uniform draws with the same counts, no IoUs or matches needed.
    pos, neg = libra_subsample_labels(
        labels, 128, 0.25, 5, iou_balanced_neg=False, instance_balanced_pos=False
    )
    assert pos.numel() == 32 and neg.numel() == 96 and (labels[neg] == 5).all()
    # Few positives: negatives fill the batch, unless bounded by neg_pos_ub per positive.
    labels = torch.cat([torch.ones(2), torch.zeros(300)]).long()
    pos, neg = libra_subsample_labels(
        labels, 256, 0.5, 0, iou_balanced_neg=False, instance_balanced_pos=False
    )
    assert pos.numel() == 2 and neg.numel() == 254
    pos, neg = libra_subsample_labels(
        labels, 256, 0.5, 0, iou_balanced_neg=False, instance_balanced_pos=False, neg_pos_ub=5
    )
    assert pos.numel() == 2 and neg.numel() == 10
    _, neg = libra_subsample_labels(
        torch.zeros(300).long(),
        256,
        0.5,
        0,
        iou_balanced_neg=False,
        instance_balanced_pos=False,
        neg_pos_ub=5,
    )
    assert neg.numel() == 5  # at least one positive counted
    with pytest.raises(ValueError, match="max_ious"):
        libra_subsample_labels(labels, 256, 0.5, 0, instance_balanced_pos=False)


def test_vectorised_on_a_large_image():
    n = 200_000
    ious = torch.rand(n, generator=gen()) * 0.5
    idx = iou_balanced_neg_sample(ious, torch.ones(n, dtype=torch.bool), 512, generator=gen())
    assert idx.numel() == 512 and idx.unique().numel() == 512
    # Max IoU ~0.5: bins [0, 1/6), [1/6, 1/3), [1/3, 1/2) each get floor(512 / 3) = 170.
    bins = iou_bin_index(ious[idx], ious.max(), 3)
    assert (torch.bincount(bins, minlength=3) >= 170).all()
