#!/usr/bin/env python3
"""The group-mode checks of the fault lab on made-up samples: a database
followed by two members at once is caught, a hand-over between samples is
not, and the group view calls a database `following` only on one member."""

import os
import sys
import unittest
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import group  # noqa: E402
from injector import Sample, healthy  # noqa: E402


def sample(t, states, alive=True, ready=True):
    return Sample(t, alive, ready, "", states, {d: 0 for d in states}, {d: 0 for d in states}, 0, 1000, t + 0.05)


def member(index, follows):
    """follows: (t, following db0 or not) every 0.25 s."""
    samples = [sample(t, {"db0": "following"} if on else {}) for t, on in follows]
    return SimpleNamespace(index=index, monitor=SimpleNamespace(samples=samples, errors=[]))


class GroupChecksTest(unittest.TestCase):
    def test_two_members_following_at_once(self):
        a = member(0, [(0.0, True), (0.25, True), (0.5, True), (0.75, True)])
        b = member(1, [(0.1, False), (0.35, True), (0.6, True), (0.85, False)])
        sure, _ = group.double_follows([a, b], ["db0"])
        self.assertEqual(len(sure), 1)
        db, x, y, start, length = sure[0]
        self.assertEqual((db, x, y), ("db0", 0, 1))
        self.assertAlmostEqual(start, 0.4)
        self.assertAlmostEqual(length, 0.2)

    def test_hand_over_between_samples_is_not_a_double_follow(self):
        a = member(0, [(0.0, True), (0.25, True), (0.5, False), (0.75, False)])
        b = member(1, [(0.1, False), (0.35, False), (0.6, True), (0.85, True)])
        sure, possible = group.double_follows([a, b], ["db0"])
        self.assertEqual((sure, possible), ([], []))

    def test_one_sample_each_is_only_possible(self):
        a = member(0, [(0.0, False), (0.25, True), (0.5, False)])
        b = member(1, [(0.0, False), (0.27, True), (0.5, False)])
        sure, possible = group.double_follows([a, b], ["db0"])
        self.assertEqual(sure, [])
        self.assertEqual(len(possible), 1)

    def test_group_view(self):
        m = [SimpleNamespace(monitor=SimpleNamespace(latest=None, errors=[])) for _ in range(2)]
        view = group.GroupMonitor(m, ["db0", "db1"])
        one = view.combine([sample(1.0, {"db0": "following"}), sample(1.1, {"db1": "following"})])
        self.assertTrue(healthy(one))
        self.assertEqual(one.t, 1.0)
        both = view.combine([sample(1.0, {"db0": "following", "db1": "following"}), sample(1.1, {"db1": "following"})])
        self.assertEqual(both.states["db1"], "following on 2 members")
        self.assertFalse(healthy(both))
        nobody = view.combine([sample(1.0, {"db0": "following"}), sample(1.1, {}, alive=False, ready=False)])
        self.assertEqual(nobody.states["db1"], "unowned")
        self.assertFalse(healthy(nobody))
        final = group.combined_status([{"databases": {"db0": {"state": "following"}}},
                                       {"databases": {"db0": {"state": "following"}, "db1": {"state": "starting"}}}],
                                      ["db0", "db1"])
        self.assertEqual(final["databases"]["db0"]["state"], "following on 2 members")
        self.assertEqual(final["databases"]["db1"]["state"], "starting")


if __name__ == "__main__":
    unittest.main()
