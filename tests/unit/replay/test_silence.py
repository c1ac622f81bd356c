"""Tests of ``silence``."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.silence import SilenceRule


class Silence(SynchronousTestCase):
    class Upload:
        def __init__(self):
            self.received = 0
            self.heard, self.quiet_since, self.silent = 0, None, False

    def test_only_the_last_connected_upload_after_another_left(self):
        rule = SilenceRule(300)
        a, b = self.Upload(), self.Upload()
        self.assertEqual(rule.judge(0, [a, b], others_left=False), ([], []))
        self.assertEqual(rule.judge(400, [a, b], others_left=True), ([], []))  # two connected: a pause
        self.assertEqual(
            rule.judge(500, [a], others_left=False), ([], [])
        )  # nobody left: alone from the start
        self.assertEqual(rule.judge(501, [a], others_left=True), ([a], []))  # silent since 0
        self.assertEqual(rule.judge(502, [a], others_left=True), ([], []))  # said once
        a.received += 10
        self.assertEqual(rule.judge(503, [a], others_left=True), ([], [a]))  # it sends again
        self.assertEqual(rule.judge(802, [a], others_left=True), ([], []))
        self.assertEqual(rule.judge(803, [a], others_left=True), ([a], []))  # 300 s after its last byte

    def test_zero_is_off(self):
        rule = SilenceRule(0)
        upload = self.Upload()
        self.assertEqual(rule.judge(0, [upload], others_left=True), ([], []))
        self.assertEqual(rule.judge(10**6, [upload], others_left=True), ([], []))
