"""Overlap host-side batching and transfer with device compute."""

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_END = object()


def prefetch(iterator: Iterator[T], size: int = 2) -> Iterator[T]:
  """Yields the items of `iterator`, produced `size` ahead in a thread.

  An exception in the producer is re-raised in the consumer; closing the
  generator stops the producer and waits for it.
  """
  items: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def produce():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            items.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      items.put(_END)
    except BaseException as e:  # handed to the consumer
      items.put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while (item := items.get()) is not _END:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    thread.join()
