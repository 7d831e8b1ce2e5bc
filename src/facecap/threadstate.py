"""Keep a Python thread state on awscrt's threads, so that its callbacks do not build one every time.

awscrt calls into Python (a message received, a connection made, a read of an S3 request's body, an
S3 answer) on its own event-loop threads, which Python did not start. For each call it takes the GIL
with PyGILState_Ensure and gives it back with PyGILState_Release. On a thread Python does not know,
Ensure creates a thread state (with a gettid call and a fresh 16 KB frame stack, mmapped and
page-faulted) and the matching Release deletes it again (munmap). The processor paid that four times per
face: in `strace -c`, 4 mmap, 4 munmap and 4 gettid calls per stored face, and none with this module.

One more Ensure on such a thread, never released, keeps its state for the thread's life; awscrt's later
Ensure/Release pairs then only take and give back the GIL. The state is freed with the interpreter (a
thread that ends first leaves one small state behind). awscrt stops calling into Python once the
interpreter is finalizing, so no callback can meet a freed state.
"""

from __future__ import annotations

import threading

# Lives in the thread state itself: a thread whose state was not kept finds it empty on every call, and
# a new thread that happens to get the id of an ended one starts empty too (a set of thread ids did not).
_this_thread = threading.local()


def keep_thread_state() -> None:
    """Call at the start of an awscrt callback: the first call on a thread keeps its Python state; later
    calls cost an attribute lookup."""
    if getattr(_this_thread, "kept", False):
        return
    import ctypes  # here, not at the top: only processes that get awscrt callbacks pay for it

    _this_thread.kept = True
    # ctypes.pythonapi calls with the GIL held, as PyGILState_Ensure expects here; it only raises the
    # thread's count of Ensure calls, which awscrt's Release then never brings to zero.
    ctypes.pythonapi.PyGILState_Ensure()
