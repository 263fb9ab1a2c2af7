#!/usr/bin/env python3
"""The fault schedule is a pure function of its seed: the same seed replays
the same faults, another seed gives another schedule, and the CI schedule has
every kind at least three times."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import schedule  # noqa: E402


class ScheduleTest(unittest.TestCase):
    def test_same_seed_same_schedule(self):
        a = schedule.make_schedule(14, 60, "ci")
        b = schedule.make_schedule(14, 60, "ci")
        self.assertEqual(a, b)
        self.assertEqual(schedule.digest(a), schedule.digest(b))

    def test_other_seed_other_schedule(self):
        self.assertNotEqual(schedule.digest(schedule.make_schedule(14, 60, "ci")),
                            schedule.digest(schedule.make_schedule(15, 60, "ci")))

    def test_every_kind_at_least_three_times(self):
        faults = schedule.make_schedule(14, 60, "ci")
        self.assertEqual(len(faults), 60)
        for kind in schedule.KINDS:
            self.assertGreaterEqual(sum(1 for f in faults if f.kind == kind), 3, kind)

    def test_group_mode_aims_at_members_and_keeps_the_rest(self):
        one = schedule.make_schedule(14, 60, "ci")
        three = schedule.make_schedule(14, 60, "ci", members=3)
        self.assertEqual(schedule.make_schedule(14, 60, "ci", members=3), three)
        for a, b in zip(one, three):
            self.assertEqual((a.kind, a.at, a.duration), (b.kind, b.at, b.duration))
            extra = {k: v for k, v in b.params.items() if k != "member"}
            self.assertEqual(a.params, extra)
            if a.kind in schedule.MEMBER_KINDS:
                self.assertIn(b.params["member"], (0, 1, 2))
                self.assertEqual(b.resource, f"{schedule.KINDS[a.kind]}:{b.params['member']}")
            else:
                self.assertNotIn("member", b.params)
                self.assertEqual(b.resource, a.resource)
        hit = {f.params["member"] for f in three if "member" in f.params}
        self.assertEqual(hit, {0, 1, 2})

    def test_timeout_toxic_stalls_or_closes(self):
        faults = schedule.make_schedule(14, 1000, "soak")
        timeouts = [f.params["attributes"]["timeout"] for f in faults if f.kind == "toxic_timeout"]
        self.assertIn(0, timeouts)  # a stall until removed
        self.assertTrue(any(100 <= t < 4000 for t in timeouts))  # closed after a while

    def test_faults_overlap(self):
        # Some fault starts before an earlier one on another resource ends.
        faults = schedule.make_schedule(14, 60, "ci")
        overlapping = sum(1 for a, b in zip(faults, faults[1:]) if b.at < a.at + a.duration)
        self.assertGreater(overlapping, 5)

    def test_soak_partitions_reach_a_minute(self):
        faults = schedule.make_schedule(1, 1000, "soak")
        longest = max(f.duration for f in faults if f.kind.startswith("partition_"))
        self.assertGreater(longest, 50)
        self.assertLessEqual(longest, 60)


if __name__ == "__main__":
    unittest.main()
