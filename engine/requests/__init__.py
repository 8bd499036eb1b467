"""The request path: every call of the engine, single or list, sync or async, takes these steps.

``prepare`` (decode the audio, compute features) runs in the caller's thread (or an executor thread for
``transcribe_async``); the :mod:`~.runner` hands the prepared request to the one place that runs the graphs
(the dynamic batcher's worker, or the caller's thread when batching is off); :mod:`~.inference` sorts,
buckets, encodes and decodes; :mod:`~.transcripts` turns decoded tokens into results.
"""
