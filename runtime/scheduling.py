"""How the calling thread is scheduled while a module call waits on the device (Linux).

A call blocks its thread on the device twice: at the readback that sizes a decode's key slice
and at the end of the call. IREE's local-task workers are pinned, one per core. When a worker
signals the fence the caller waits on, the woken caller preempts that worker on its own core,
and IREE 3.13's wait (`iree_async_semaphore_multi_wait`) then spins with a pause loop until
the worker's signalling callback has finished, which the pinned worker can only do once the
scheduler's next tick takes the core back from the spinning caller: a stall of one tick (4 ms)
in many calls. Found with `perf record`: the caller spent about 20% of a core in that function,
and the profiled gap sits right after the readback (benchmarks.dispatch_profile).

Linux's SCHED_BATCH is SCHED_OTHER without wakeup preemption: the same share of the CPU (no
starvation), but a woken thread waits for the running one to yield or for the tick instead of
taking its core. During a call the thread runs under it; its own policy is restored after.
Measured (2-core Xeon VM, decode at 16384 / 16000 valid and batch 4 at 4096 / 4000, 60 calls,
alternated twice): median 11.0–11.2 → 10.1–10.3 ms and 10.8–11.7 → 10.0–10.3 ms, p90 16.0–17.3
→ 10.4–11.2 ms; SCHED_IDLE did the same but can starve under load, nice 19 did not help.
"""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def without_wakeup_preemption():
    """Within: the calling thread under SCHED_BATCH if it runs under SCHED_OTHER (Linux);
    anything else (another policy, no such call here, a sandbox that refuses it) is left as
    it is."""
    batch = getattr(os, "SCHED_BATCH", None)
    try:
        switch = batch is not None and os.sched_getscheduler(0) == os.SCHED_OTHER
        if switch:
            os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:
        switch = False
    try:
        yield
    finally:
        if switch:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
