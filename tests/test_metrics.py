"""Retrieval metrics against hand arithmetic: AP, the R@k hit rate, and their means over queries."""

from __future__ import annotations

import pytest

from clipsearch.metrics import Scores, average_precision, evaluate, recall_at_k


def test_average_precision_is_the_mean_precision_at_each_relevant_rank():
    # Relevant at ranks 1 and 3, 2 relevant in the gallery: precision 1/1 at rank 1, 2/3 at rank 3.
    assert average_precision([True, False, True, False], n_relevant=2) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_average_precision_counts_relevant_photos_never_retrieved_as_zero():
    # The same ranking with 4 relevant in the gallery: the 2 missing ones add precision 0.
    assert average_precision([True, False, True, False], n_relevant=4) == pytest.approx((1 / 1 + 2 / 3) / 4)


def test_average_precision_of_a_ranking_without_relevant_photos_is_zero():
    assert average_precision([False, False, False], n_relevant=3) == 0.0
    assert average_precision([], n_relevant=1) == 0.0


def test_average_precision_of_a_perfect_ranking_is_one():
    assert average_precision([True, True, True, False, False], n_relevant=3) == pytest.approx(1.0)


def test_average_precision_refuses_counts_that_cannot_be_right():
    with pytest.raises(ValueError, match="at least 1"):
        average_precision([False, False], n_relevant=0)
    with pytest.raises(ValueError, match="holds 2 relevant"):
        average_precision([True, True], n_relevant=1)


def test_recall_at_k_is_a_hit_within_the_first_k():
    ranking = [False, False, True, False]
    assert [recall_at_k(ranking, k) for k in (1, 2, 3, 4)] == [0.0, 0.0, 1.0, 1.0]


def test_recall_at_k_is_a_hit_rate_not_the_share_of_relevant_photos_found():
    # 1 of 3 relevant photos in the first 2: the IR recall would be 1/3, the hit rate is 1.
    assert recall_at_k([True, False, False, True, True], 2) == 1.0


def test_recall_at_k_past_the_end_of_a_short_ranking_looks_at_all_of_it():
    assert recall_at_k([False, True], 10) == 1.0
    assert recall_at_k([False, False], 10) == 0.0
    assert recall_at_k([], 1) == 0.0


def test_recall_at_k_refuses_k_under_one():
    with pytest.raises(ValueError, match="at least 1"):
        recall_at_k([True], 0)


def test_evaluate_averages_ap_and_hits_over_queries():
    rankings = [
        ["cat", "dog", "cat", "dog"],  # cat, 3 cats in the gallery: AP = (1/1 + 2/3) / 3
        ["cat", "cat", "dog", "cat"],  # dog, 2 dogs in the gallery: AP = (1/3) / 2
    ]
    scores = evaluate(rankings, ["cat", "dog"], {"cat": 3, "dog": 2}, ks=(1, 2, 3))
    aps = [(1 + 2 / 3) / 3, (1 / 3) / 2]
    assert scores.ap == pytest.approx(aps)
    assert scores.mean_ap == pytest.approx((aps[0] + aps[1]) / 2)
    # The cat query hits at rank 1, the dog query first at rank 3.
    assert scores.recall == {1: 0.5, 2: 0.5, 3: 1.0}


def test_evaluate_reports_r_at_1_5_and_10_by_default():
    scores = evaluate([["a"] + ["b"] * 11], ["a"], {"a": 1, "b": 11})
    assert scores == Scores(mean_ap=1.0, recall={1: 1.0, 5: 1.0, 10: 1.0}, ap=[1.0])


def test_evaluate_refuses_a_query_whose_label_no_gallery_photo_carries():
    with pytest.raises(ValueError, match="query 1 \\('fox'\\) has no relevant photo"):
        evaluate([["cat"], ["cat"]], ["cat", "fox"], {"cat": 1})


def test_evaluate_refuses_no_queries_and_mismatched_lengths():
    with pytest.raises(ValueError, match="no queries"):
        evaluate([], [], {})
    with pytest.raises(ValueError, match="2 rankings for 1 queries"):
        evaluate([["cat"], ["cat"]], ["cat"], {"cat": 1})
