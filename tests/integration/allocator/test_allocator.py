"""cbagate allocates with mimalloc (PROXY_MIMALLOC, cmake/Allocator.cmake).

- The executable's NEEDED entries name libmimalloc.so.2, ahead of libstdc++ and libc: that order
  is what makes its definitions the ones the whole process binds to.
- At run time (LD_BIND_NOW, so every reference is bound at start-up, and LD_DEBUG=bindings) every
  reference to malloc, free, calloc, realloc, the aligned allocations and operator new/delete, from
  cbagate itself, libc, libstdc++, OpenSSL and every other library loaded, binds to mimalloc, none
  to glibc's or libstdc++'s own.
- mimalloc initializes in the process (MIMALLOC_VERBOSE) and the binary runs as usual.

Exits 77 (ctest: skipped) when the build does not link mimalloc (PROXY_MIMALLOC=OFF, sanitizer
and fuzz builds).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ.get("CBAGATE_BIN")
LINKED = os.environ.get("CBAGATE_MIMALLOC", "").upper() in ("ON", "1", "TRUE", "YES")
MIMALLOC = "libmimalloc.so.2"

# Allocation entry points: mimalloc defines each (nm -D libmimalloc.so.2).
ALLOCATION_SYMBOLS = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size",
    "_Znwm", "_Znam", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
    "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
}

BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `([^']+)'")


def run(args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MIMALLOC_"))}
    e.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=e,
                          stdin=subprocess.DEVNULL)


class Mimalloc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BIN:
            raise unittest.SkipTest("CBAGATE_BIN must be set")

    def test_needed_lists_mimalloc_before_libstdcxx_and_libc(self):
        if shutil.which("readelf") is None:
            self.skipTest("readelf (binutils) not installed")
        out = run(["readelf", "--dynamic", "--wide", BIN])
        self.assertEqual(out.returncode, 0, out.stderr)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
        self.assertIn(MIMALLOC, needed)
        for later in ("libstdc++.so.6", "libc.so.6"):
            self.assertIn(later, needed)
            self.assertLess(needed.index(MIMALLOC), needed.index(later), needed)

    def test_every_allocation_reference_binds_to_mimalloc(self):
        with tempfile.TemporaryDirectory(prefix="cbagate-alloc-") as tmp:
            log = os.path.join(tmp, "ld")
            out = run([BIN, "--print-schema"],
                      env={"LD_BIND_NOW": "1", "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": log})
            self.assertEqual(out.returncode, 0, out.stderr)
            text = ""
            for name in os.listdir(tmp):  # LD_DEBUG_OUTPUT gets a .PID suffix
                with open(os.path.join(tmp, name)) as f:
                    text += f.read()
        bound = {}  # (referencing object, symbol) -> defining object
        for m in BINDING.finditer(text):
            if m.group(3) in ALLOCATION_SYMBOLS:
                bound[(os.path.basename(m.group(1)), m.group(3))] = os.path.basename(m.group(2))
        elsewhere = sorted(f"{ref}: {sym} -> {lib}" for (ref, sym), lib in bound.items()
                           if not lib.startswith(MIMALLOC))
        self.assertEqual(elsewhere, [], "allocation symbols bound outside mimalloc")
        referencing = {ref for ref, _ in bound}
        # Our code (operator new), glibc itself (strdup, getaddrinfo, ...), libstdc++ and OpenSSL.
        for obj in (os.path.basename(BIN), "libc.so.6", "libstdc++.so.6", "libcrypto.so.3"):
            self.assertIn(obj, referencing, f"{obj} bound no allocation symbol")
        self.assertEqual(bound.get((os.path.basename(BIN), "_Znwm")), MIMALLOC)
        self.assertEqual(bound.get(("libc.so.6", "malloc")), MIMALLOC)
        self.assertEqual(bound.get(("libcrypto.so.3", "malloc")), MIMALLOC)

    def test_mimalloc_initializes_and_cbagate_runs(self):
        out = run([BIN, "--version"], env={"MIMALLOC_VERBOSE": "1"})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^cbagate \d+\.\d+\.\d+")
        self.assertIn("mimalloc: process init", out.stderr)
        # Without the variable mimalloc prints nothing: the output of cbagate stays its own.
        out = run([BIN, "--version"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("mimalloc", out.stderr)


if __name__ == "__main__":
    if not LINKED:
        print("integration_allocator: skipped: this build does not link mimalloc "
              f"(CBAGATE_MIMALLOC={os.environ.get('CBAGATE_MIMALLOC', '')!r})")
        sys.exit(77)
    unittest.main()
