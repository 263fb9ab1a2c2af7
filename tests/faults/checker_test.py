#!/usr/bin/env python3
"""The checker on made-up records (no servers): what it calls lost,
duplicated and a phantom, and which documents end on an older revision in
their partition."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402

_offsets = {}


def rec(doc_id, rev, topic="t-case", partition=0, db="db0"):
    """A record appended to (topic, partition): offsets grow in call order."""
    offset = _offsets.get((topic, partition), 0)
    _offsets[(topic, partition)] = offset + 1
    return {"db": db, "id": doc_id, "rev": rev, "deletion": False, "published": 0.0, "topic": topic,
            "partition": partition, "offset": offset}


class CheckerTest(unittest.TestCase):
    def setUp(self):
        _offsets.clear()

    def test_in_order_with_a_duplicate(self):
        changes = {("db0", "a"): ("2-x", False), ("db0", "b"): ("1-y", False)}
        records = [rec("a", "1-w"), rec("b", "1-y"), rec("a", "2-x"), rec("a", "2-x")]
        found = checker.check(changes, records, [("t", "db0", "a", "1-w")])
        self.assertEqual(found["lost"], [])
        self.assertEqual(found["phantoms"], [])
        self.assertEqual(found["duplicate_count"], 1)
        self.assertEqual(found["stale_last"], [])

    def test_an_older_revision_after_the_current_one(self):
        changes = {("db0", "a"): ("3-z", False)}
        records = [rec("a", "1-w"), rec("a", "3-z"), rec("a", "2-x")]
        found = checker.check(changes, records, [("t", "db0", "a", "2-x"), ("t", "db0", "a", "1-w")])
        self.assertEqual(found["stale_last"], [("db0", "a", "3-z")])
        self.assertEqual(found["lost"], [])

    def test_a_resend_of_the_current_revision_ends_the_partition(self):
        # A rewind sends the current revision again after the old one.
        changes = {("db0", "a"): ("2-x", False)}
        records = [rec("a", "1-w"), rec("a", "2-x"), rec("a", "1-w"), rec("a", "2-x")]
        self.assertEqual(checker.check(changes, records, [])["stale_last"], [])

    def test_offsets_not_list_order_decide(self):
        changes = {("db0", "a"): ("2-x", False)}
        old, new = rec("a", "1-w"), rec("a", "2-x")
        self.assertEqual(checker.check(changes, [new, old], [])["stale_last"], [])
        new["offset"], old["offset"] = old["offset"], new["offset"]
        self.assertEqual(checker.check(changes, [new, old], [])["stale_last"], [("db0", "a", "2-x")])

    def test_other_topics_and_partitions_are_not_compared(self):
        # A soft delete routed elsewhere: the old topic may end on an old revision.
        changes = {("db0", "a"): ("2-x", True)}
        records = [rec("a", "1-w", topic="t-case"), rec("a", "2-x", topic="t-meta"), rec("a", "1-w", topic="t-case")]
        self.assertEqual(checker.check(changes, records, [])["stale_last"], [])
        records.append(rec("a", "1-w", topic="t-meta", partition=1))
        self.assertEqual(checker.check(changes, records, [])["stale_last"], [])

    def test_lost_and_phantom(self):
        changes = {("db0", "a"): ("2-x", False), ("db0", "b"): ("1-y", False)}
        records = [rec("a", "1-w"), rec("c", "1-q")]
        found = checker.check(changes, records, [("t", "db0", "a", "1-w")])
        self.assertEqual(found["lost"], [("db0", "a", "2-x"), ("db0", "b", "1-y")])
        self.assertEqual(found["phantoms"], [("db0", "c", "1-q")])
        self.assertEqual(found["stale_last"], [])


if __name__ == "__main__":
    unittest.main()
