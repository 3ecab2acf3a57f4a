"""Worker hosts: the allreduce client and the orchestrator of the main job.

- :mod:`hosts.worker`: :class:`~hosts.worker.AllreduceClient`, one worker's
  packets, window, retransmissions and host-side conversion.
- :mod:`hosts.allreduce`: ``fpisa allreduce``: a switch and K workers as
  processes on loopback UDP, with the bit-exactness and error checks.
- :mod:`hosts.cli`: the ``allreduce`` and ``worker`` subcommands.
"""
