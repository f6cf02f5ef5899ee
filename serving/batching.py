"""Server-side dynamic batching, as TF Serving's ``--enable_batching`` does it.

Concurrent requests to one signature wait in a queue; a batch thread takes the first, gathers more
until ``max_batch_size`` images or ``timeout_s`` after the first arrived, runs the model once on the
concatenation and hands each request its rows. One model call on 32 images costs far less than 32
calls on one, so throughput under concurrency rises; a lone request waits at most the timeout.
"""
import concurrent.futures
import queue
import threading
import time

import numpy as np

_STOP = object()


class _Task:
    def __init__(self, inputs, size):
        self.inputs = inputs
        self.size = size
        self.future = concurrent.futures.Future()


class Batcher:
    """Batches calls of ``run(inputs) -> outputs`` (dicts of arrays whose first axis is the batch)."""

    def __init__(self, run, max_batch_size=32, timeout_s=0.002, threads=2, on_batch=None):
        self.run = run
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self.queue = queue.Queue()
        self.closed = False
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True, name=f"batch-{i}") for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def __call__(self, inputs, size):
        """Run ``inputs`` (``size`` rows) in a batch with others; blocks until its rows are ready."""
        with self._lock:
            if self.closed or size >= self.max_batch_size:
                task = None
            else:
                task = _Task(inputs, size)
                self.queue.put(task)
        if task is None:
            return self._run([inputs], size)
        return task.future.result()

    def close(self):
        """Stop taking new tasks; queued ones still run. Returns once the batch threads have finished."""
        with self._lock:
            self.closed = True
            for _ in self.threads:
                self.queue.put(_STOP)
        for thread in self.threads:
            thread.join()

    def _run(self, inputs_list, size):
        if len(inputs_list) == 1:
            merged = inputs_list[0]
        else:
            merged = {k: np.concatenate([inputs[k] for inputs in inputs_list]) for k in inputs_list[0]}
        if self.on_batch:
            self.on_batch(size)
        return self.run(merged)

    def _loop(self):
        carried = None
        while True:
            first = carried if carried is not None else self.queue.get()
            carried = None
            if first is _STOP:
                return
            batch, size = [first], first.size
            deadline = time.monotonic() + self.timeout_s
            stop = False
            while size < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    task = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if task is _STOP:
                    stop = True
                    break
                if size + task.size > self.max_batch_size:
                    carried = task
                    break
                batch.append(task)
                size += task.size
            self._finish(batch, size)
            if stop:
                return

    def _finish(self, batch, size):
        try:
            outputs = self._run([task.inputs for task in batch], size)
        except Exception as err:
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            # one bad request (a corrupt image) must not fail its neighbours: run each on its own
            for task in batch:
                self._finish([task], task.size)
            return
        start = 0
        for task in batch:
            end = start + task.size
            task.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end
