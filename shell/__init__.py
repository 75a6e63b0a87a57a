"""The I/O shell code both implementations share, and nothing protocol-specific.

``impl_select`` and ``impl_threads`` each drive ``core/`` in their own I/O model
(one thread with a selector, or a thread per connection); what they do the same
way lives here, so that neither implementation imports the other:

- ``shell.broker_main``: the broker's command line, store, token and listening
  sockets, then hands them to the implementation's serve loop.
- ``shell.netutil``: socket set-up (listeners, TCP keepalive and
  TCP_USER_TIMEOUT, descriptor limits) and the read size.
- ``shell.store``: the durable job store (``sqlite:PATH``) behind ``--store``.
- ``shell.output``: the worker's multicast sender and syslog logger.
- ``shell.worker_io``: the worker's command line, outputs and reconnect loop
  around a per-slot connection that each implementation supplies.
"""
