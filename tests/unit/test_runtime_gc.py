"""A serving process freezes what its start left and collects garbage less often."""

from __future__ import annotations

import gc

from credit_common.runtime import GC_THRESHOLDS, quiet_garbage_collection


def test_the_objects_of_the_start_are_frozen_and_the_thresholds_raised():
    before = gc.get_threshold()
    try:
        quiet_garbage_collection()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 10_000  # this test process's modules, at the least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
