"""Unit tests of the bench's own arithmetic (tests/bench/lib/bench.py): where callgrind's
instructions are counted, and the CPU-split table. No proxy runs here."""
import argparse
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# A callgrind dump in its compressed form: names are given once with their id, then the id
# alone; a cost line after calls= is the call's inclusive cost, already counted where the
# callee's own lines are.
DUMP = """version: 1
creator: callgrind-3.19.0
positions: line
events: Ir
summary: 460
ob=(1) /usr/sbin/proxy
fl=(1) main.c
fn=(1) main
3 100
cob=(2) /usr/lib/x86_64-linux-gnu/libssl.so.3
cfi=(2) ssl.c
cfn=(2) SSL_read
calls=1 0
4 5000
+1 20
ob=(3) /usr/lib/x86_64-linux-gnu/libcrypto.so.3
fl=(3) gcm.c
fn=(3) gcm
1 200
ob=(2)
fl=(2)
fn=(2)
1 100
cob=(3)
cfi=(3)
cfn=(3)
calls=2 0
2 200
ob=(4) /usr/lib/x86_64-linux-gnu/libc.so.6
fl=(4) memcpy.S
fn=(4) memcpy
* 30
+2 10
ob=(5) /usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0
fl=(5) alloc.c
fn=(5) malloc
0 0

totals: 460
"""


class CallgrindByGroup(unittest.TestCase):
    def test_self_costs_go_to_their_object_and_call_costs_are_not_counted_twice(self):
        g = bench.callgrind_by_group(DUMP)
        self.assertEqual(g, {"own": 120, "openssl": 300, "libc_alloc": 40})
        self.assertEqual(sum(g.values()), 460)  # the dump's totals

    def test_an_object_named_once_keeps_its_group_when_named_by_id(self):
        # ob=(2) without a name is libssl again: its cost is OpenSSL's, not the proxy's.
        g = bench.callgrind_by_group(DUMP.replace("1 100\ncob=(3)", "1 7\ncob=(3)"))
        self.assertEqual(g["openssl"], 207)
        self.assertEqual(g["own"], 120)


class CpuSplit(unittest.TestCase):
    def make(self) -> bench.Bench:
        b = bench.Bench.__new__(bench.Bench)  # no set-up: only the recording and the table
        b.a = argparse.Namespace(proxies=["cbagate", "nginx", "haproxy"], reps=1, seconds=1)
        b.metrics = {}
        b.results = {"meta": {}, "checks": {}, "crypto": {}}
        b.core_proxy, b.core_load = "0", "1"
        b.metric("ab_64_rps", "keep-alive GET, 64 conn", "1/s", "higher", rate=True)
        return b

    def test_record_keeps_user_and_kernel_microseconds_per_request(self):
        b = self.make()
        b.record("ab_64_rps", "cbagate", 25000.0, 3.0, 100000, split=(1.2, 1.8))
        v = b.metrics["ab_64_rps"]["values"]["cbagate"]
        self.assertAlmostEqual(v["user_us"][0], 12.0)
        self.assertAlmostEqual(v["kernel_us"][0], 18.0)
        # A failed run (no value) has no split: it would count CPU without its work.
        b.record("ab_64_rps", "nginx", None, 3.0, 100000, split=(1.0, 2.0))
        self.assertNotIn("user_us", b.metrics["ab_64_rps"]["values"]["nginx"])

    def test_the_table_shows_the_split_and_compares_user_space_then_totals(self):
        b = self.make()
        b.record("ab_64_rps", "cbagate", 25000.0, 3.0, 100000, split=(1.0, 2.0))  # 10 + 20 us
        b.record("ab_64_rps", "nginx", 27000.0, 3.0, 100000, split=(1.25, 1.75))  # 12.5 + 17.5
        b.record("ab_64_rps", "haproxy", 26000.0, 3.0, 100000, split=(0.5, 2.5))  # 5 + 25
        b.summarize()
        table = b.table()
        row = next(line for line in table.splitlines()
                   if line.startswith("| keep-alive GET, 64 conn |") and "+" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        self.assertEqual(cells, ["keep-alive GET, 64 conn", "10.0 + 20.0", "12.5 + 17.5",
                                 "5.0 + 25.0", "0.80, 1.00", "2.00, 1.00"])


if __name__ == "__main__":
    unittest.main()
