"""A run's logs on the runner: stdout/stderr → numbered records → the coordinator, without loss.

* :mod:`.lines` — bytes → line records: split, cut at ``max_line_bytes``,
  masked, rate-limited (the record shape is documented there);
* :mod:`.spool` — sealed batches waiting for the sink, in memory then on disk,
  and the spool files a closed pump leaves for a replay;
* :mod:`.pump` — :class:`LogPump`: reads the fds, batches, hands each batch to
  its sink once, spools while the sink is blocked, pauses the strategy when the
  spool is full;
* :mod:`.uploader` — the sink that talks to the coordinator
  (:class:`LogUploader`, :func:`deliver_spools`): the one place that retries.
"""

from sequence.runner.logs.lines import LogPumpStats, LogRecord, LogSink
from sequence.runner.logs.pump import LogPump, LogPumpConfig
from sequence.runner.logs.spool import replay_spool, spool_files

__all__ = ["LogPump", "LogPumpConfig", "LogPumpStats", "LogRecord", "LogSink", "replay_spool", "spool_files"]
