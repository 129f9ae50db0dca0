"""Training corpora: text in memory or token files on disk behind one protocol
(``tokens``: ``TextCorpus``, ``PreparedCorpus``, ``TokenFile``), and the writer of prepared
corpora (``prepare``, behind ``gptref prepare``). The core sees a corpus's splits only as
1-D tensors of ids (a ``TokenFile``'s ``ids``)."""
