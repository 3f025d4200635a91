"""What the PyTorch parity tests (test_parity.py, test_lora_parity.py, test_masked_parity.py)
check before they start, in the suite's "N passed, N failed" format: that torch and numpy import
(a skip line when they do not, or a failure under ANETRAIN_REQUIRE_TORCH=1, as CI sets), and that
the C tool they drive is built."""
import os
import sys


def torch_missing(test):
    """None when numpy and torch import under this interpreter; otherwise prints the skip (or
    the failure) for `test` and returns its exit code."""
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        return None
    except Exception as e:  # ImportError, or a broken install
        why = "cannot import torch/numpy under %s: %s: %s" % (sys.executable, type(e).__name__, e)
    if os.environ.get("ANETRAIN_REQUIRE_TORCH") == "1":
        print("FAIL %s: %s (ANETRAIN_REQUIRE_TORCH=1)" % (test, why))
        print("0 passed, 1 failed")
        return 1
    print("%s: %s" % (test, why))
    print("skipped: %s (torch not available; set ANETRAIN_REQUIRE_TORCH=1 to make this a failure)" % test)
    return 0


def tool_missing(test, tool):
    """None when the tool at path `tool` is an executable; otherwise prints the failure and
    returns 1."""
    if os.access(tool, os.X_OK):
        return None
    print("FAIL %s: %s not found or not executable (build it first)" % (test, tool))
    print("0 passed, 1 failed")
    return 1
